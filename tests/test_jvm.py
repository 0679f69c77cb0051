"""The jar of the platform's Java functions (chaussettes.jvm): built with the JDK's javac from
the sources beside the package, named after them, and what a Spark JVM takes at launch."""

from __future__ import annotations

import shutil
import zipfile

import pytest
from chaussettes import cli, jvm, sparkconf


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """The package's Java sources in a folder of their own, where builds go."""
    for src in jvm.SOURCES:
        shutil.copy(src, tmp_path / src.name)
    monkeypatch.setattr(jvm, "HERE", tmp_path)
    monkeypatch.setattr(jvm, "SOURCES", sorted(tmp_path.glob("*.java")))
    return tmp_path


def test_the_jar_is_built_from_the_sources_and_named_after_them(sources):
    jar = jvm.build()
    assert jar.parent == sources and jar == jvm.jar_path()
    with zipfile.ZipFile(jar) as z:
        assert "chaussettes/jvm/FastCombined.class" in z.namelist()
    built_at = jar.stat().st_mtime_ns
    assert jvm.build() == jar and jar.stat().st_mtime_ns == built_at  # built: nothing to do
    assert jvm.launch_conf() == {"spark.driver.extraClassPath": str(jar), "spark.jars": str(jar)}

    src = sources / "FastCombined.java"
    src.write_text(src.read_text() + "\n// changed\n")
    jvm.SOURCES[:] = sorted(sources.glob("*.java"))
    assert jvm.launch_conf() == {}  # the jar of older sources is never used
    again = jvm.build()
    assert again != jar and again.exists() and not jar.exists()


def test_without_a_jdk_the_build_says_so_in_one_line_and_spark_goes_without(sources, monkeypatch, capsys):
    monkeypatch.setattr(jvm, "_javac", lambda: None)
    assert cli.main(["jvm"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("chaussettes: javac not found") and "\n" not in err
    assert jvm.launch_conf() == {}


def test_a_compile_error_is_reported(sources):
    (sources / "FastCombined.java").write_text("package chaussettes.jvm; class Broken {")
    jvm.SOURCES[:] = sorted(sources.glob("*.java"))
    with pytest.raises(RuntimeError, match="javac failed"):
        jvm.build()
    assert not list(sources.glob("*.jar")) and not list(sources.glob("*.part"))


def test_every_spark_launch_of_the_platform_carries_the_built_jar():
    """``make`` built it: the shared JVM settings (sessions, spark-submit lines, the
    calibration's operator) put it on the driver's class path and ship it to executors."""
    jar = str(jvm.jar_path())
    assert sparkconf.JVM_CONF["spark.driver.extraClassPath"] == jar
    assert f"spark.jars={jar}" in sparkconf.submit_conf()
