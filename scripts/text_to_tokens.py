#!/usr/bin/env python3
"""Convert a UTF-8 text file into a byte-level peftrun token file (docs/DATA.md).

Each byte of the file becomes one token (vocab_size 256), so any text works without a
tokenizer; the model learns UTF-8 byte sequences directly.

    python3 scripts/text_to_tokens.py my_text.txt data/mine/train.tok

Standard library only. Also imported by scripts/make_corpus.py for write_token_file().
"""

import argparse
import os
import struct
import sys

MAGIC = b"PEFTTOK1"
VERSION = 1
HEADER = struct.Struct("<8sIIIIQ")  # magic, version, bytes_per_token, vocab_size, reserved, n
assert HEADER.size == 32


def bytes_per_token(vocab_size):
    """The smallest width that holds every id < vocab_size (same rule as the C++ writer)."""
    if vocab_size <= 1 << 8:
        return 1
    if vocab_size <= 1 << 16:
        return 2
    return 4


def write_token_file(path, tokens, vocab_size):
    """Write tokens (a sequence of ints in [0, vocab_size)) as a version-1 token file.

    Written to a temporary file and renamed into place, so an interrupted run never leaves a
    half-written file where the trainer will look for data.
    """
    if not 1 <= vocab_size <= 1 << 31:
        raise ValueError(f"bad vocab_size {vocab_size}")
    bad = next((i for i, t in enumerate(tokens) if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ValueError(f"token {bad} has value {tokens[bad]}, outside [0, {vocab_size})")
    bpt = bytes_per_token(vocab_size)
    if bpt == 1:
        body = bytes(tokens)
    else:
        body = struct.pack(f"<{len(tokens)}{'H' if bpt == 2 else 'I'}", *tokens)
    header = HEADER.pack(MAGIC, VERSION, bpt, vocab_size, 0, len(tokens))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="UTF-8 text file")
    parser.add_argument("output", help="token file to write (e.g. data/mine/train.tok)")
    args = parser.parse_args(argv)

    with open(args.input, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        sys.exit(f"{args.input}: not valid UTF-8 ({e})")
    out_dir = os.path.dirname(args.output)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    write_token_file(args.output, list(data), 256)
    print(f"{args.output}: {len(data)} tokens (byte-level, vocab_size 256)")


if __name__ == "__main__":
    main(sys.argv[1:])
