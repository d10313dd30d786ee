"""peftrun vs PyTorch + transformers + PEFT, side by side (see bench/README.md).

Everything in this package but torch_worker.py and base_model.py runs on the Python standard
library alone, so the driver, its case table and its self-test work without torch or numpy.
"""
