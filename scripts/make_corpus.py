#!/usr/bin/env python3
"""Generate peftrun's shipped tiny corpus: data/tiny/train.tok and data/tiny/eval.tok.

The text is English-like prose produced by a small probabilistic grammar defined below (made-up
village stories: names, animals, objects, places, simple past-tense sentences, dialogue,
questions and counting). It is regular enough that a small byte-level model clearly beats the
uniform loss (ln 256 = 5.55 nats) within a few hundred steps, yet varied enough not to be
memorised at once.

Deterministic: the randomness is a self-contained splitmix64 generator (not Python's `random`,
whose algorithms may change between versions), so the output is byte-identical on every
Python 3. Train and eval use different seeds, and eval paragraphs that happen to occur verbatim
in train are skipped.

    python3 scripts/make_corpus.py            # writes data/tiny/{train,eval}.tok
    python3 scripts/make_corpus.py --print-sample

Standard library only.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from text_to_tokens import write_token_file  # noqa: E402

TRAIN_SEED = 20240601
EVAL_SEED = 771
TRAIN_BYTES = 400_000
EVAL_BYTES = 40_000

MASK64 = (1 << 64) - 1


class Rng:
    """splitmix64; bounded draws by rejection so they are unbiased and reproducible."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        threshold = ((1 << 64) - n) % n
        while True:
            r = self.next()
            if r >= threshold:
                return r % n

    def chance(self, p):
        return self.below(1_000_000) < int(p * 1_000_000)

    def pick(self, items):
        return items[self.below(len(items))]

    def zipf(self, items):
        """Earlier items are more frequent (weight 1/(rank+2)), like word frequencies in text."""
        weights = [1_000_000 // (i + 2) for i in range(len(items))]
        r = self.below(sum(weights))
        for item, w in zip(items, weights):
            if r < w:
                return item
            r -= w
        return items[-1]


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

NAMES = [  # (name, pronoun, possessive)
    ("Ada", "she", "her"), ("Bram", "he", "his"), ("Cora", "she", "her"), ("Dev", "he", "his"),
    ("Elin", "she", "her"), ("Finn", "he", "his"), ("Greta", "she", "her"), ("Hugo", "he", "his"),
    ("Ines", "she", "her"), ("Jonah", "he", "his"), ("Kira", "she", "her"), ("Leo", "he", "his"),
    ("Mira", "she", "her"), ("Nils", "he", "his"), ("Olga", "she", "her"), ("Pablo", "he", "his"),
    ("Rosa", "she", "her"), ("Sami", "he", "his"), ("Tove", "she", "her"), ("Viktor", "he", "his"),
    ("Wren", "she", "her"), ("Yusuf", "he", "his"), ("Zora", "she", "her"), ("Otto", "he", "his"),
]

PEOPLE = ["baker", "farmer", "sailor", "teacher", "doctor", "miller", "weaver", "hunter", "child",
          "merchant", "painter", "fisher", "guard", "cook", "singer", "smith", "shepherd", "king",
          "queen", "stranger", "neighbor", "boy", "girl", "woman", "man"]

ANIMALS = ["cat", "dog", "fox", "horse", "goat", "owl", "crow", "rabbit", "wolf", "bear", "mouse",
           "sheep", "deer", "duck", "frog", "hen", "bee", "fish", "pig", "lamb", "badger", "swan"]

THINGS = ["lamp", "key", "book", "cup", "basket", "rope", "coat", "boat", "letter", "map", "bell",
          "stone", "apple", "candle", "box", "hat", "ring", "chair", "table", "drum", "kettle",
          "shovel", "blanket", "coin", "feather", "jar", "ladder", "mirror", "needle", "pot",
          "spoon", "wheel", "flute", "scarf", "bucket", "clock", "pear", "egg", "umbrella", "comb"]

PLACES = ["market", "river", "forest", "village", "harbor", "mill", "bridge", "garden", "hill",
          "tower", "kitchen", "barn", "library", "school", "castle", "meadow", "well", "cave",
          "shore", "road", "field", "square", "inn", "orchard", "lake", "bakery"]

IRREGULAR_PLURAL = {"child": "children", "sheep": "sheep", "deer": "deer", "fish": "fish",
                    "mouse": "mice", "wolf": "wolves", "woman": "women", "man": "men",
                    "scarf": "scarves"}

# Adjectives per noun category keep phrases sensible ("the wooden spoon", not "the proud cup").
THING_ADJ = ["old", "small", "big", "red", "green", "blue", "yellow", "brown", "white", "black",
             "dark", "bright", "warm", "cold", "wet", "heavy", "little", "strange", "clean",
             "dusty", "empty", "broken", "new", "golden", "silver", "wooden", "soft", "round",
             "long", "shiny", "tiny"]
ANIMAL_ADJ = ["old", "young", "small", "big", "brown", "white", "black", "little", "happy",
              "tired", "clever", "brave", "strange", "gentle", "lazy", "hungry", "proud", "shy",
              "sleepy", "noisy", "lucky", "funny", "wet"]
PERSON_ADJ = ["old", "young", "kind", "brave", "tired", "clever", "busy", "hungry", "proud",
              "shy", "tall", "happy", "quiet", "lazy", "lucky", "sleepy", "gentle", "funny"]
PLACE_ADJ = ["old", "quiet", "busy", "dark", "bright", "cold", "warm", "empty", "green", "small",
             "big", "noisy", "dusty", "clean", "wet", "strange"]

VERBS_T = [  # transitive: base, third person, past
    ("see", "sees", "saw"), ("find", "finds", "found"), ("carry", "carries", "carried"),
    ("take", "takes", "took"), ("hold", "holds", "held"), ("bring", "brings", "brought"),
    ("lose", "loses", "lost"), ("open", "opens", "opened"), ("fix", "fixes", "fixed"),
    ("sell", "sells", "sold"), ("buy", "buys", "bought"), ("want", "wants", "wanted"),
    ("watch", "watches", "watched"), ("clean", "cleans", "cleaned"), ("wash", "washes", "washed"),
    ("hide", "hides", "hid"), ("throw", "throws", "threw"), ("catch", "catches", "caught"),
    ("drop", "drops", "dropped"), ("lift", "lifts", "lifted"), ("pull", "pulls", "pulled"),
    ("push", "pushes", "pushed"), ("fill", "fills", "filled"), ("mend", "mends", "mended"),
    ("need", "needs", "needed"), ("keep", "keeps", "kept"), ("paint", "paints", "painted"),
    ("borrow", "borrows", "borrowed"), ("drag", "drags", "dragged"), ("polish", "polishes",
                                                                     "polished"),
]

VERBS_I = [  # intransitive: base, third person, past
    ("sleep", "sleeps", "slept"), ("sing", "sings", "sang"), ("laugh", "laughs", "laughed"),
    ("run", "runs", "ran"), ("walk", "walks", "walked"), ("wait", "waits", "waited"),
    ("rest", "rests", "rested"), ("dance", "dances", "danced"), ("work", "works", "worked"),
    ("jump", "jumps", "jumped"), ("shout", "shouts", "shouted"), ("smile", "smiles", "smiled"),
    ("sit", "sits", "sat"), ("swim", "swims", "swam"), ("hum", "hums", "hummed"),
    ("wander", "wanders", "wandered"), ("listen", "listens", "listened"),
    ("whistle", "whistles", "whistled"), ("cry", "cries", "cried"), ("hurry", "hurries",
                                                                      "hurried"),
]

ANIMAL_SOUNDS = {"cat": "purred", "dog": "barked", "fox": "yelped", "horse": "neighed",
                 "goat": "bleated", "owl": "hooted", "crow": "cawed", "wolf": "howled",
                 "bear": "growled", "mouse": "squeaked", "sheep": "bleated", "duck": "quacked",
                 "frog": "croaked", "hen": "clucked", "bee": "buzzed", "pig": "grunted",
                 "lamb": "bleated", "swan": "hissed"}

ADVERBS = ["slowly", "quickly", "quietly", "loudly", "carefully", "happily", "sadly", "softly",
           "gladly", "again", "together", "alone", "early", "late", "for a while", "all day"]

PREPOSITIONS = ["in", "near", "behind", "beside", "across", "by", "past", "around"]

TIMES = ["in the morning", "at noon", "in the evening", "at night", "after dinner",
         "before dawn", "on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday",
         "on Saturday", "on Sunday", "in the spring", "in the summer", "in the autumn",
         "in the winter", "the next day", "one day", "later", "that afternoon", "at last"]

WEATHER = ["The sun was bright and the sky was blue.", "It rained all day.",
           "The wind was cold and the sky was gray.", "Snow fell on the roofs.",
           "A thick fog lay over the fields.", "The air was warm and still.",
           "Clouds gathered over the hills.", "The stars came out one by one."]

FEELINGS = ["happy", "sad", "tired", "hungry", "worried", "proud", "sleepy", "glad", "cold",
            "curious", "surprised", "calm"]

NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve"]

COLORS = ["red", "green", "blue", "yellow", "brown", "white", "black", "gray"]


# ---------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------

def plural(noun):
    if noun in IRREGULAR_PLURAL:
        return IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def article(word):
    """'a' or 'an' by the next word's first letter (the vocabulary avoids exceptions)."""
    return "an" if word[0] in "aeiou" else "a"


def cap(s):
    return s[0].upper() + s[1:]


class Story:
    """One paragraph's state: a protagonist (for pronouns), a friend and a home place."""

    def __init__(self, rng):
        self.rng = rng
        self.hero = rng.zipf(NAMES)
        self.friend = rng.pick([n for n in NAMES if n != self.hero])
        self.place = rng.zipf(PLACES)
        self.mentioned = False  # pronouns only after the name was used

    # --- noun phrases ---

    def subject(self):
        r = self.rng
        name, pron, _ = self.hero
        if self.mentioned and r.chance(0.4):
            return pron
        if r.chance(0.12):
            return "the " + (r.pick(PERSON_ADJ) + " " if r.chance(0.5) else "") + r.zipf(PEOPLE)
        self.mentioned = True
        return name

    def hero_subject(self):
        """Name or pronoun, for sentences whose second clause refers back with a pronoun."""
        name, pron, _ = self.hero
        if self.mentioned and self.rng.chance(0.4):
            return pron
        self.mentioned = True
        return name

    def thing_np(self, definite=None):
        r = self.rng
        noun = r.zipf(THINGS)
        adj = r.zipf(THING_ADJ) + " " if r.chance(0.45) else ""
        if definite is None:
            definite = r.chance(0.6)
        if definite:
            return ("the " if r.chance(0.8) else self.hero[2] + " ") + adj + noun
        return article(adj or noun) + " " + adj + noun

    def animal_np(self):
        r = self.rng
        adj = r.pick(ANIMAL_ADJ) + " " if r.chance(0.35) else ""
        noun = r.zipf(ANIMALS)
        return ("the " if r.chance(0.6) else article(adj or noun) + " ") + adj + noun, noun

    def place_pp(self):
        r = self.rng
        place = self.place if r.chance(0.5) else r.zipf(PLACES)
        adj = r.pick(PLACE_ADJ) + " " if r.chance(0.25) else ""
        return r.pick(PREPOSITIONS) + " the " + adj + place

    # --- sentences ---

    def s_transitive(self):
        r = self.rng
        verb = r.zipf(VERBS_T)[2]
        tail = " " + self.place_pp() if r.chance(0.5) else ""
        return f"{cap(self.subject())} {verb} {self.thing_np()}{tail}."

    def s_intransitive(self):
        r = self.rng
        verb = r.zipf(VERBS_I)[2]
        tail = " " + r.pick(ADVERBS) if r.chance(0.6) else ""
        if r.chance(0.35):
            tail += " " + self.place_pp()
        return f"{cap(self.subject())} {verb}{tail}."

    def s_went(self):
        r = self.rng
        time = r.pick(TIMES)
        dest = self.place if r.chance(0.6) else r.zipf(PLACES)
        subj = self.subject()
        how = r.pick(["went", "walked", "ran", "rode", "hurried"])
        with_friend = f" with {self.friend[0]}" if r.chance(0.3) else ""
        return f"{cap(time)}, {subj} {how} to the {dest}{with_friend}."

    def s_count(self):
        r = self.rng
        n = r.below(len(NUMBERS) - 2) + 2
        noun = r.pick(THINGS + ANIMALS)
        name, pron, _ = self.hero
        self.mentioned = True
        first = f"{name} had {NUMBERS[n]} {plural(noun)}."
        if r.chance(0.6):
            k = r.below(n - 1) + 1
            return (f"{first} {cap(pron)} gave {NUMBERS[k - 1]} to {self.friend[0]}, "
                    f"so {pron} had {NUMBERS[n - k]} left.")
        return first

    def s_dialogue(self):
        r = self.rng
        noun = r.zipf(THINGS)
        asker, answerer = (self.hero, self.friend) if r.chance(0.5) else (self.friend, self.hero)
        self.mentioned = True
        kind = r.below(4)
        if kind == 0:
            return (f"\"Where is my {noun}?\" asked {asker[0]}. "
                    f"\"It is {self.place_pp()},\" said {answerer[0]}.")
        if kind == 1:
            return (f"\"Can you help me?\" asked {asker[0]}. "
                    f"\"Yes, of course,\" said {answerer[0]}.")
        if kind == 2:
            feeling = r.pick(FEELINGS)
            return f"\"I am {feeling} today,\" said {asker[0]}."
        return (f"\"Look at the {r.pick(COLORS)} {noun}!\" said {asker[0]}, "
                f"and {answerer[1]} looked.")

    def s_question(self):
        r = self.rng
        base = r.zipf(VERBS_T)[0]
        name, pron, _ = self.hero
        self.mentioned = True
        noun = r.zipf(THINGS)
        if r.chance(0.5):
            return f"Did {name} {base} the {noun}? Yes, {pron} did."
        return f"Did {name} {base} the {noun}? No, {pron} did not."

    def s_scene(self):
        r = self.rng
        kind = r.below(4)
        if kind == 0:
            a, b = r.pick(PLACE_ADJ), r.pick(PLACE_ADJ)
            if a == b:
                return f"The {self.place} was very {a}."
            return f"The {self.place} was {a} and {b}."
        if kind == 1:
            np, _ = self.animal_np()
            return f"There was {np} {self.place_pp()}." if not np.startswith("the") else \
                f"{cap(np)} was {self.place_pp()}."
        if kind == 2:
            return r.pick(WEATHER)
        a1, a2 = r.pick(ANIMALS), r.pick(ANIMALS)
        name, pron, _ = self.hero
        self.mentioned = True
        if a1 == a2:
            return f"{name} liked {plural(a1)} very much."
        return f"{name} liked {plural(a1)}, but {pron} did not like {plural(a2)}."

    def s_animal(self):
        r = self.rng
        np, noun = self.animal_np()
        sound = ANIMAL_SOUNDS.get(noun, "watched")
        tail = " " + r.pick(ADVERBS) if r.chance(0.5) else ""
        return f"{cap(np)} {sound}{tail}."

    def s_because(self):
        r = self.rng
        feeling = r.pick(FEELINGS)
        subj = self.hero_subject()
        verb = r.zipf(VERBS_I)[2]
        return f"Because {subj} was {feeling}, {self.hero[1]} {verb} {r.pick(ADVERBS)}."

    def s_then(self):
        r = self.rng
        verb_t = r.zipf(VERBS_T)[2]
        verb_i = r.zipf(VERBS_I)[2]
        subj = self.hero_subject()
        return f"{cap(subj)} {verb_t} {self.thing_np()}, and then {self.hero[1]} {verb_i}."

    def sentence(self):
        kinds = [self.s_transitive, self.s_transitive, self.s_intransitive, self.s_went,
                 self.s_count, self.s_dialogue, self.s_question, self.s_scene, self.s_animal,
                 self.s_because, self.s_then]
        return self.rng.pick(kinds)()


def paragraph(rng):
    story = Story(rng)
    n = 3 + rng.below(5)
    first = story.s_went() if rng.chance(0.5) else story.s_scene()
    sentences = [first]
    while len(sentences) < n:
        s = story.sentence()
        if s not in sentences:  # an exact repeat within a paragraph reads like a glitch
            sentences.append(s)
    if rng.chance(0.3):
        sentences.append(f"In the end, {story.hero[0]} was {rng.pick(FEELINGS)}.")
    return " ".join(sentences)


def generate(seed, target_bytes, exclude=frozenset()):
    """Paragraphs separated by blank lines, with a chapter heading every ~20 paragraphs, cut at a
    paragraph boundary so the total stays within target_bytes."""
    rng = Rng(seed)
    out, size, chapter, since_heading = [], 0, 0, 20
    paragraphs = set()
    while True:
        block = ""
        if since_heading >= 20 and rng.chance(0.5):
            chapter += 1
            since_heading = 0
            block = f"Chapter {chapter}\n\n"
        para = paragraph(rng)
        if para in exclude:
            continue
        block += para + "\n\n"
        if size + len(block) > target_bytes:
            break
        out.append(block)
        paragraphs.add(para)
        size += len(block)
        since_heading += 1
    return "".join(out), paragraphs


def main(argv):
    parser = argparse.ArgumentParser(description="Generate data/tiny/{train,eval}.tok")
    parser.add_argument("--out-dir", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "tiny"))
    parser.add_argument("--print-sample", action="store_true",
                        help="print the first 1500 characters of the train text and exit")
    args = parser.parse_args(argv)

    train_text, train_paras = generate(TRAIN_SEED, TRAIN_BYTES)
    if args.print_sample:
        print(train_text[:1500])
        return
    eval_text, _ = generate(EVAL_SEED, EVAL_BYTES, exclude=frozenset(train_paras))

    os.makedirs(args.out_dir, exist_ok=True)
    for name, text in (("train.tok", train_text), ("eval.tok", eval_text)):
        data = text.encode("ascii")  # the grammar is pure ASCII: one byte per character
        path = os.path.join(args.out_dir, name)
        write_token_file(path, list(data), 256)
        print(f"{path}: {len(data)} tokens")


if __name__ == "__main__":
    main(sys.argv[1:])
