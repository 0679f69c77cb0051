"""The Alertmanager relay: incidents on the ``alerts`` topic → Prometheus Alertmanager.

    python -m chaussettes.notify [--alertmanager URL] [--from-beginning] [--once]

``tracker`` maps incident events to Alertmanager alerts and keeps the open incidents;
``relay`` is the Kafka loop (offsets committed once Alertmanager accepted a batch);
``cli`` the command line.
"""
