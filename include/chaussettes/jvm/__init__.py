"""Spark functions written in Java, where Spark's built-ins are the detector's bottleneck.

One today: ``FastCombined``, the log parser's fast path (``sparkparse.FAST_COMBINED``) as a
scanner over the line's bytes instead of a regular expression and a split (profiled: those
two were about a third of the detector's JVM time; then checking, decoding and re-encoding
the line about a sixth of what was left).

The jar is built from the sources beside this file with the JDK's ``javac`` against pyspark's
own jars (``python -m chaussettes jvm``; ``make`` runs it), and named after a digest of the
sources: a jar left from older sources is never used. Without a JDK there is no jar, and the
parser uses the regular expression (the same rows, slower): the platform works either way.

A jar must be on the driver's class path when its JVM starts (``launch_conf``: every session
and spark-submit line of the platform takes it from ``sparkconf``); executors elsewhere fetch
it from the driver (``spark.jars``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("chaussettes.jvm")

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("*.java"))
FAST_COMBINED = "chaussettes_fast_combined"  # the SQL name of chaussettes.jvm.FastCombined
_FUNCTIONS = {FAST_COMBINED: ("chaussettes.jvm.FastCombined", "array<string>")}  # class, return type


def _digest() -> str:
    h = hashlib.sha256()
    for src in SOURCES:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:12]


def jar_path() -> Path:
    """The jar of the current sources (it may not be built)."""
    return HERE / f"chaussettes-jvm-{_digest()}.jar"


def launch_conf() -> dict[str, str]:
    """What a Spark JVM needs at launch to have the functions; empty when the jar is not built."""
    jar = jar_path()
    if not jar.exists():
        return {}
    return {"spark.driver.extraClassPath": str(jar), "spark.jars": str(jar)}


def _javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def build() -> Path:
    """Compile the sources into ``jar_path()`` (nothing to do when it exists); older jars go.
    Raises RuntimeError with the reason when it cannot (no JDK, a compile error)."""
    jar = jar_path()
    if jar.exists():
        return jar
    javac = _javac()
    if javac is None:
        raise RuntimeError("javac not found (install a JDK: apt-get install openjdk-17-jdk-headless); "
                           "the parser keeps its regular expression")
    import pyspark

    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory(prefix="chaussettes-jvm-") as tmp:
        out = subprocess.run([javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", tmp,
                              *map(str, SOURCES)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"javac failed: {(out.stderr or out.stdout).strip()[-2000:]}")
        part = jar.with_suffix(".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for cls in sorted(Path(tmp).rglob("*.class")):
                z.write(cls, cls.relative_to(tmp).as_posix())
        part.replace(jar)
    for old in HERE.glob("chaussettes-jvm-*.jar"):
        if old != jar:
            old.unlink(missing_ok=True)
    return jar


def available(spark, name: str) -> bool:
    """Whether the Java function ``name`` can be called in this session (registered on first
    use): not when its jar was not on the driver's class path at launch."""
    if spark.catalog.functionExists(name):
        return True
    conf = spark.sparkContext.getConf()
    jar = jar_path()
    if str(jar) not in conf.get("spark.driver.extraClassPath", "").split(os.pathsep) or not jar.exists():
        return False
    try:
        spark.udf.registerJavaFunction(name, *_FUNCTIONS[name])
    except Exception as exc:  # noqa: BLE001 - the built-in expressions do the same work
        log.warning("the Java function %s is not available (%s): using Spark's built-in expressions",
                    name, str(exc).splitlines()[0][:300])
        return False
    return True
