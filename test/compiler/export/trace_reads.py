"""Runs an exported train.py (argv[1]: the export folder; the rest: train.py's flags) with the
model's checkpoint reader wrapped, so each process appends "<rank> <folder>" to the file named by
KILN_READS_LOG for every Hugging Face folder it reads: which ranks read the checkpoint."""
import os
import runpy
import sys

pkg = sys.argv[1]
sys.path.insert(0, pkg)
import model  # noqa: E402  (the module train.py imports: sys.modules holds this one)

_read = model.read_folder


def traced(folder):
    with open(os.environ["KILN_READS_LOG"], "a") as f:
        f.write(f"{os.environ.get('RANK', '0')} {folder}\n")
    return _read(folder)


model.read_folder = traced
sys.argv = [os.path.join(pkg, "train.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
