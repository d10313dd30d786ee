#!/usr/bin/env python3
"""Builds the tokenizer parity fixtures with the Hugging Face `tokenizers` library itself.

For each tokenizer family peftrun reads (byte-level BPE as in GPT-2, SmolLM, Llama 3 and Qwen2;
SentencePiece-style BPE with byte fallback as in Llama 2, Mistral and Gemma) it assembles a
tokenizer with that family's real pipeline settings (normalizer, pre-tokenizer regexes, BPE
options, added/special tokens, post-processor, decoder), trains a small vocabulary on a generated
corpus, and writes into OUT/<style>/:

  tokenizer.json          what `tokenizers` saves (the file peftrun loads)
  tokenizer_config.json   bos/eos and a chat template in the family's style (for detection)
  expected.json           for every text of the multilingual test corpus: the ids with and
                          without special tokens, and decode() of them with and without
                          skipping special tokens

The C++ tests (tests/tokenizer_test.cpp) load the same tokenizer.json and must reproduce every
id and decoded string. Deterministic: the corpus is generated without randomness and the BPE
trainer breaks ties deterministically, so rerunning gives the same files.

usage: python3 tests/tokenizer/make_fixtures.py [OUT]   (default: tests/tokenizer/fixtures)
Needs the `tokenizers` version pinned in tests/tokenizer/requirements.txt.
"""

import json
import os
import sys

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

# The pre-tokenizer regexes of the real families (public model files carry these exact strings).
GPT2_STYLE = None  # ByteLevel(use_regex=True) uses its built-in GPT-2 pattern
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ---------------------------------------------------------------------------------------------
# Corpora, written for peftrun. Training text: phrases in several scripts, recombined
# deterministically so the trainer sees enough repetition to learn merges.
# ---------------------------------------------------------------------------------------------
PHRASES = [
    "The river carried small boats past the old mill.",
    "She counted forty-two lanterns along the harbour wall.",
    "Don't forget: we'll meet at the station, won't we?",
    "They've painted the fence green, and it's drying now.",
    "Le café près de la gare ouvre à sept heures.",
    "Élodie a préféré la crème brûlée au gâteau.",
    "Die Brücke über den Fluss ist schön und groß.",
    "Müller wohnt in der Straße neben dem Bäcker.",
    "El niño comió una manzana en la mañana soleada.",
    "Привет, как дела? Сегодня тёплый день.",
    "Москва и Санкт-Петербург — большие города.",
    "我们明天去公园散步，好吗？",
    "这本书很有意思，我已经读了两遍。",
    "今日は雨が降っているので、家で本を読みます。",
    "東京駅から新幹線に乗りました。",
    "مرحبا، كيف حالك اليوم؟",
    "الكتاب على الطاولة بجانب النافذة.",
    "서울의 봄은 따뜻하고 아름답습니다.",
    "Γειά σου κόσμε, η θάλασσα είναι ήρεμη.",
    "नमस्ते, आज मौसम अच्छा है।",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { total += values[i]; }\n",
    "if x >= 10 and y != 3:\n\tprint(f\"{x} {y}\")\n",
    "SELECT name, age FROM people WHERE age > 30;",
    "Version 3.14 shipped on 2024-05-17 with 1,024 fixes.",
    "Call 555-0199 or send 12345 to the number 67890.",
    "Great job! 👍 See you soon 😊 🎉",
    "Prices: $4.99, €12.50, £7 and ¥300.",
    "   indented line with    several   spaces",
    "tabs\tbetween\twords\tand\nnew lines\n\nhere",
]

TEST_TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you today?",
    "  two leading spaces and trailing  ",
    "a" + " " * 20 + "b",
    "line one\nline two\r\nline three\n\n\nend",
    "\t\tTabbed\tcontent\t",
    "I'm sure you're right; he'll say they've gone and we'd stay. IT'S DON'T",
    "naïve café—résumé… “quoted” ‘single’ «guillemets»",
    "Decomposed: e\u0301 a\u0308 n\u0303 versus composed: é ä ñ",
    "Ligatures ﬁ ﬂ and fullwidth ＡＢＣ１２３",
    "Straße, İstanbul, ΣΊΣΥΦΟΣ, Ǆemal",
    "Числа 1234567890 и 3.14159 и 1,000,000.",
    "中文测试，包含标点符号。日本語のテキスト、カタカナとひらがな。",
    "한국어 문장과 English mixed 텍스트",
    "مرحبا بالعالم 123 שלום עולם",
    "ภาษาไทย ไม่มีช่องว่าง नमस्ते दुनिया",
    "Emoji: 👍🏽 👨\u200d👩\u200d👧 🇯🇵 ❤️ 🤖",
    "def square(x):\n    return x ** 2  # comment\n\nprint(square(12))\n",
    "if (a && b) { c++; } else { d -= 0x1F; }",
    "<html><body class=\"main\">Text &amp; more</body></html>",
    "NEL\u0085 NBSP\u00a0 IDEOSP\u3000 LS\u2028 MVS\u180e ZWSP\u200b end",
    "Special inside <|endoftext|> text and <|im_start|>user\nhi<|im_end|> done",
    "<s>Starts with bos</s> and <s> again",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "[INST] What is 2+2? [/INST] 4</s>",
    "Partial specials <|endof and <|im_sta and <0x41> and ▁ literal",
    "Adjacent<|endoftext|><|endoftext|>tokens",
    "Around <mask> the mask and <tool_call>{\"a\": 1}</tool_call>",
    "Numbers: 0 00 000 0000 12345678901234567890",
    "Mixed123abc456DEF   trailing\n",
    "ALL CAPS SENTENCE WITH 'S AND 'LL",
    "unseen words: xylophone quizzical jabberwocky zephyr",
    "Ünïcödé ḿäḱéś ẗḧïś ḧäŕḋ",
    "\n",
    "    ",
    "!!!???...;;;",
]


def training_corpus():
    lines = []
    n = len(PHRASES)
    for i in range(n):
        lines.append(PHRASES[i])
        for step in (1, 3, 7):
            lines.append(PHRASES[i] + " " + PHRASES[(i + step) % n])
    lines.extend(["<|endoftext|> separates documents", "numbers 0 1 2 3 4 5 6 7 8 9 10 100"])
    return lines * 4


# ---------------------------------------------------------------------------------------------
# Tokenizer styles
# ---------------------------------------------------------------------------------------------

def frequent_chars(min_count):
    """Characters seen at least min_count times in the training corpus ('▁' for spaces), so
    that rarer ones (most CJK, emoji) stay outside the vocabulary and exercise byte fallback.
    Passing them as the whole alphabet keeps training deterministic: the trainer's own
    limit_alphabet cut breaks frequency ties in hash order."""
    counts = {}
    for line in training_corpus():
        for ch in line.replace(" ", "▁"):
            counts[ch] = counts.get(ch, 0) + 1
    counts["▁"] = counts.get("▁", 0) + min_count  # Prepend adds one to every line
    return sorted(ch for ch, n in counts.items() if n >= min_count)


def train_bpe(tok, vocab_size, specials, byte_level):
    kwargs = dict(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                  show_progress=False)
    if byte_level:
        kwargs["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    else:
        alphabet = frequent_chars(40)
        kwargs["initial_alphabet"] = alphabet
        kwargs["limit_alphabet"] = len(alphabet)
    tok.train_from_iterator(training_corpus(), trainers.BpeTrainer(**kwargs))


def edit_json(tok, fn):
    """Applies fn to the serialised tokenizer and reloads it (settings the trainer resets)."""
    data = json.loads(tok.to_str())
    fn(data)
    return Tokenizer.from_str(json.dumps(data))


def gpt2_style():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    train_bpe(tok, 900, ["<|endoftext|>"], byte_level=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "add_bos_token": False, "add_eos_token": False}
    return tok, config


def smollm_style():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    train_bpe(tok, 900, specials, byte_level=True)
    # An lstrip/rstrip token and a single-word token: the added-vocabulary matching rules.
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("quiz", single_word=True, normalized=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
              "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] "
                               "+ '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                               "{% endfor %}"}
    return tok, config


def llama3_style():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    train_bpe(tok, 1000, specials, byte_level=True)

    def keep_ignore_merges(data):
        data["model"]["ignore_merges"] = True
    tok = edit_json(tok, keep_ignore_merges)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)])])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "chat_template": "{{ bos_token }}{% for message in messages %}"
                               "{{ '<|start_header_id|>' + message['role'] + "
                               "'<|end_header_id|>\\n\\n' + message['content'] | trim + "
                               "'<|eot_id|>' }}{% endfor %}"}
    return tok, config


def qwen2_style():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    train_bpe(tok, 1000, specials, byte_level=True)
    # Qwen2 carries non-special added tokens too (tool-call markers), matched before BPE.
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False),
                    AddedToken("</tool_call>", normalized=False, special=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] "
                               "+ '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                               "{% endfor %}"}
    return tok, config


BYTE_TOKENS = ["<0x%02X>" % b for b in range(256)]


def sentencepiece_vocab_fixup(data):
    """Real Llama 2 / Mistral / Gemma files keep <0xNN> in the model vocabulary only: they are not
    added tokens (so the literal text "<0x41>" is not matched as one), and BPE falls back to them
    for characters outside the vocabulary."""
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in BYTE_TOKENS]
    data["model"]["byte_fallback"] = True
    data["model"]["fuse_unk"] = True
    data["model"]["unk_token"] = "<unk>"


def llama2_style():
    """Llama 2 as converted by transformers' legacy path: Prepend + Replace normaliser, no
    pre-tokenizer (whole pieces go to BPE), Replace/ByteFallback/Fuse/Strip decoder."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    train_bpe(tok, 900, ["<unk>", "<s>", "</s>"] + BYTE_TOKENS, byte_level=False)
    tok = edit_json(tok, sentencepiece_vocab_fixup)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False,
              "chat_template": "{% for message in messages %}{% if message['role'] == 'user' %}"
                               "{{ bos_token + '[INST] ' + message['content'].strip() + "
                               "' [/INST]' }}{% elif message['role'] == 'system' %}"
                               "{{ '<<SYS>>\\n' + message['content'] + '\\n<</SYS>>\\n\\n' }}"
                               "{% else %}{{ ' ' + message['content'].strip() + ' ' + "
                               "eos_token }}{% endif %}{% endfor %}"}
    return tok, config


def mistral_style():
    """Mistral / Llama 2 as newer transformers convert them: Metaspace pre-tokenizer with
    prepend_scheme 'first' (no normaliser), control tokens [INST] and [/INST]."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    train_bpe(tok, 900, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"] + BYTE_TOKENS,
              byte_level=False)
    tok = edit_json(tok, sentencepiece_vocab_fixup)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(
        replacement="▁", prepend_scheme="first", split=False), decoders.Fuse()])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False,
              "chat_template": "{{ bos_token }}{% for message in messages %}"
                               "{% if message['role'] == 'user' %}{{ '[INST] ' + "
                               "message['content'] + ' [/INST]' }}{% else %}"
                               "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"}
    return tok, config


# Gemma 3's chat template, verbatim (google/gemma-3-*-it tokenizer_config.json): a system message
# is folded into the first user turn, the assistant role is written "model".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate "
    "user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)


def gemma_style():
    """Gemma as transformers' GemmaConverter writes it: Replace(" ", "▁") normaliser alone (no
    Prepend), no pre-tokenizer, BPE with byte fallback, <pad> <eos> <bos> <unk> as ids 0-3,
    <start_of_turn>/<end_of_turn> special, Replace/ByteFallback/Fuse decoder (no Strip), and
    GemmaTokenizerFast's `<bos> $A` post-processor."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    train_bpe(tok, 900, ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
              + BYTE_TOKENS, byte_level=False)
    tok = edit_json(tok, sentencepiece_vocab_fixup)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1",
        special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    config = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
              "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False,
              "chat_template": GEMMA3_CHAT_TEMPLATE}
    return tok, config


STYLES = {
    "gpt2": gpt2_style,
    "smollm": smollm_style,
    "llama3": llama3_style,
    "qwen2": qwen2_style,
    "llama2": llama2_style,
    "mistral": mistral_style,
    "gemma": gemma_style,
}


def expected_for(tok):
    cases = []
    # Every text alone, then all of them in one document (long inputs, mixed scripts).
    for text in TEST_TEXTS + ["\n".join(TEST_TEXTS), " ".join(PHRASES)]:
        plain = tok.encode(text, add_special_tokens=False).ids
        special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "text": text,
            "ids": plain,
            "ids_with_special_tokens": special,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(plain, skip_special_tokens=True),
        })
    return cases


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def write_expected(path, name, tok):
    """One case per line: small, and diffs show which texts changed."""
    head = {"tokenizers_version": tokenizers.__version__, "style": name,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True)}
    lines = [json.dumps(c, ensure_ascii=False) for c in expected_for(tok)]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "cases": [\n')
        f.write(",\n".join(lines))
        f.write("\n]}\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "fixtures")
    for name, build in STYLES.items():
        tok, config = build()
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"), pretty=False)
        write_json(os.path.join(folder, "tokenizer_config.json"), config)
        write_expected(os.path.join(folder, "expected.json"), name, tok)
        print(f"{folder}: vocab {tok.get_vocab_size(with_added_tokens=True)}")


if __name__ == "__main__":
    main()
