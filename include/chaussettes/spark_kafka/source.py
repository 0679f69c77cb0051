"""The ``kafka`` DataSource class: dispatches to the readers and writers, validating options."""

from __future__ import annotations

from pyspark.sql.datasource import DataSource

from chaussettes.spark_kafka.reader import KafkaBatchReader, KafkaStreamReader, ReadConfig
from chaussettes.spark_kafka.writer import KafkaBatchWriter, KafkaStreamWriter, WriteConfig

SCHEMA = ("key binary, value binary, topic string, partition int, offset long, "
          "timestamp timestamp, timestampType int")
HEADERS = ", headers array<struct<key: string, value: binary>>"


class KafkaDataSource(DataSource):
    """Spark's Kafka source and sink API over confluent-kafka (see the package docstring)."""

    @classmethod
    def name(cls) -> str:
        return "chaussettes_kafka"  # format("kafka") is aliased to it by register()

    def _includes_headers(self) -> bool:
        return str(self.options.get("includeheaders", "false")).strip().lower() in ("true", "1", "yes")

    def schema(self):
        # Called when a read is defined: malformed read options fail here, before any query.
        # Batch or streaming is not known yet: the options must suit one of them.
        try:
            ReadConfig.parse(self.options, streaming=True)
        except ValueError as streaming_error:
            try:
                ReadConfig.parse(self.options, streaming=False)
            except ValueError:
                raise streaming_error from None
        return SCHEMA + (HEADERS if self._includes_headers() else "")

    def reader(self, schema):
        return KafkaBatchReader(ReadConfig.parse(self.options, streaming=False))

    def streamReader(self, schema):
        return KafkaStreamReader(ReadConfig.parse(self.options, streaming=True))

    def writer(self, schema, overwrite):
        return KafkaBatchWriter(WriteConfig.parse(self.options))

    def streamWriter(self, schema, overwrite):
        return KafkaStreamWriter(WriteConfig.parse(self.options), sink_id=None)
