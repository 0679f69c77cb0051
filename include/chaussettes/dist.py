"""The zip that `spark-submit --py-files` ships to a cluster's executors."""

from __future__ import annotations

import zipfile
from pathlib import Path

from chaussettes.settings import PACKAGE_DIR


def build_zip(out_dir: Path) -> Path:
    """Write <out_dir>/chaussettes.zip with the package (sources and data files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "chaussettes.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(PACKAGE_DIR.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            zf.write(path, Path("chaussettes") / path.relative_to(PACKAGE_DIR))
    tmp.replace(target)
    return target
