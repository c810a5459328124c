"""Loads a Seedling export as a user would, with Hugging Face `datasets`.

Usage: load_export.py EXPORT_DIR

Every format of every split the manifest lists is loaded, and the row
counts must match the manifest; a split the manifest omits must have no
files. Prints the rows per split as JSON. Exits non-zero (with the loader's
own error) when anything fails to load.
"""
import json
import sys
from pathlib import Path

from datasets import load_dataset

out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
counts = manifest["per_split"]
omitted = manifest["omitted_splits"]
present = [split for split, rows in counts.items() if rows > 0]
assert sorted(present + omitted) == sorted(counts), (present, omitted, counts)

for fmt in ["data", "chatml", "sharegpt", "alpaca"]:
    for split in omitted:
        assert not (out / fmt / f"{split}.jsonl").exists(), (fmt, split)
    files = {split: str(out / fmt / f"{split}.jsonl") for split in present}
    loaded = load_dataset("json", data_files=files)
    for split in present:
        assert loaded[split].num_rows == counts[split], (fmt, split, loaded[split].num_rows)

# The whole directory at once, split names taken from the file names.
loaded = load_dataset("parquet", data_dir=str(out / "parquet"))
assert sorted(loaded.keys()) == sorted(present), (list(loaded.keys()), present)
for split in present:
    assert loaded[split].num_rows == counts[split], ("parquet", split)
print(json.dumps({split: loaded[split].num_rows for split in present}))
