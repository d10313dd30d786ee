"""The token stream both systems train on, and peftrun's sample order re-implemented.

Data: the shipped byte-level corpus (data/tiny/train.tok) cut into words, digits and punctuation,
each distinct piece one id (in order of first appearance, from 3 on), written as a peftrun token
file (docs/DATA.md, version 1). With LLaMA's 32000-id vocabulary the lm_head is real-sized, and
the loss still falls quickly since only a few hundred ids occur.

Order: peftrun's TokenWindowSource (runtime/data/batch_loader.*) trains step s on samples
s*B .. s*B + B - 1, sample i on window perm_e[i % n] of epoch e = i // n, where perm_e is
window_permutation(n, seed, e) and window w is tokens[w*L : w*L + L + 1] (inputs the first L,
targets the last L). `step_batch` returns exactly those rows, so PyTorch reads the same windows in
the same order.
"""

import re
import struct

MASK64 = (1 << 64) - 1
MAGIC = b"PEFTTOK1"
FIRST_WORD_ID = 3  # 0..2 stay unused (the usual pad/bos/eos slots)


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def window_permutation(num_windows, seed, epoch):
    """docs/DATA.md "The permutation, bit-exactly": Fisher-Yates on splitmix64."""
    state = _mix64((_mix64(seed & MASK64) + epoch) & MASK64)
    perm = list(range(num_windows))
    for i in range(num_windows, 1, -1):
        threshold = ((1 << 64) - i) % i
        while True:
            state = (state + 0x9E3779B97F4A7C15) & MASK64
            r = _mix64(state)
            if r >= threshold:
                break
        j = r % i
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm


def read_token_file(path):
    """(vocab_size, tokens) of a version-1 token file; refuses anything else naming the file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 32 or blob[:8] != MAGIC:
        raise ValueError(f"{path}: not a peftrun token file (expected magic PEFTTOK1)")
    version, width, vocab, reserved, count = struct.unpack_from("<IIIIQ", blob, 8)
    if version != 1 or width not in (1, 2, 4) or reserved != 0 or len(blob) != 32 + count * width:
        raise ValueError(f"{path}: unsupported or damaged token file header")
    code = {1: "B", 2: "H", 4: "I"}[width]
    return vocab, list(struct.unpack_from(f"<{count}{code}", blob, 32))


def write_token_file(path, tokens, vocab_size):
    width = 1 if vocab_size <= 256 else 2 if vocab_size <= 65536 else 4
    code = {1: "B", 2: "H", 4: "I"}[width]
    if any(t >= vocab_size or t < 0 for t in tokens):
        raise ValueError(f"{path}: a token id is outside [0, {vocab_size})")
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<IIIIQ", 1, width, vocab_size, 0, len(tokens)))
        f.write(struct.pack(f"<{len(tokens)}{code}", *tokens))


WORD = re.compile(r"[A-Za-z]+|[0-9]+|\n|[^\sA-Za-z0-9]")


def word_tokens(text, vocab_size):
    """Word-level ids for `text`: each distinct word / number / newline / punctuation mark one id."""
    ids, vocab = [], {}
    for piece in WORD.findall(text):
        if piece not in vocab:
            vocab[piece] = FIRST_WORD_ID + len(vocab)
            if vocab[piece] >= vocab_size:
                raise ValueError(f"the corpus has more than {vocab_size - FIRST_WORD_ID} distinct words")
        ids.append(vocab[piece])
    return ids


def make_word_token_file(byte_token_file, out_path, vocab_size):
    _, raw = read_token_file(byte_token_file)
    tokens = word_tokens(bytes(raw).decode("utf-8"), vocab_size)
    write_token_file(out_path, tokens, vocab_size)
    return len(tokens)


class Windows:
    """The training rows of peftrun's TokenWindowSource for one (tokens, seq_len, seed)."""

    def __init__(self, tokens, seq_len, seed):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.num_windows = (len(tokens) - 1) // seq_len if tokens else 0
        if self.num_windows == 0:
            raise ValueError(f"{len(tokens)} tokens are fewer than one window of {seq_len + 1}")
        self._perms = {}

    def window_of(self, sample):
        epoch = sample // self.num_windows
        if epoch not in self._perms:
            self._perms = {epoch: window_permutation(self.num_windows, self.seed, epoch)}
        return self._perms[epoch][sample % self.num_windows]

    def step_batch(self, step, batch):
        """(inputs, targets): `batch` rows of `seq_len` ids each, for optimizer step `step`."""
        inputs, targets = [], []
        for r in range(batch):
            w = self.window_of(step * batch + r)
            row = self.tokens[w * self.seq_len: w * self.seq_len + self.seq_len + 1]
            inputs.append(row[:-1])
            targets.append(row[1:])
        return inputs, targets
