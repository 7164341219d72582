"""TEI's and OpenAI's own Python clients against a running `fusebert serve` (run by
serve_clients.rs with the pinned clients of scripts/setup.sh's .venv-clients).

The server serves three models: the default (an embedding model), `ce` (a cross-encoder) and
`clf` (a three-label classifier). Each client call's result is checked against the server's
own /embed, /rerank, /predict answers fetched with the standard library, so what is tested is
that the clients reach the right routes and decode the replies. Exits non-zero on any failure.
"""
import json
import math
import sys
import urllib.request

import huggingface_hub
import openai
from huggingface_hub import InferenceClient

URL = sys.argv[1].rstrip("/")
DEFAULT = sys.argv[2]


def raw(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def close(a, b, tol=1e-6):
    a, b = list(map(float, a)), list(map(float, b))
    assert len(a) == len(b), (len(a), len(b))
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= tol, worst


print("huggingface_hub", huggingface_hub.__version__, "openai", openai.__version__)
texts = ["Hello!", "The quick brown fox jumps over the lazy dog."]
want = raw("/embed", {"inputs": texts})

# feature_extraction posts {"inputs", ...parameters} to the URL itself: POST / embeds.
client = InferenceClient(model=URL)
got = client.feature_extraction(texts[1])
assert got.shape == (1, len(want[1])), got.shape
close(got[0], want[1])
got = client.feature_extraction(texts[0], normalize=False, truncate=True, truncation_direction="left")
unnormalized = raw("/embed", {"inputs": texts[0], "normalize": False})
close(got[0], unnormalized[0])

# sentence_similarity posts {"inputs": {"source_sentence", "sentences"}} to the same URL.
sims = client.sentence_similarity(texts[0], other_sentences=[texts[1], texts[0]])
dot = sum(x * y for x, y in zip(want[0], want[1]))
assert abs(sims[0] - dot) < 1e-5 and abs(sims[1] - 1.0) < 1e-5, sims

# text_classification on the classifier, by its /models/NAME/ URL (POST dispatches to /predict).
clf = InferenceClient(model=URL + "/models/clf/")
top = clf.text_classification("I like it")
scores = raw("/models/clf/predict", {"inputs": "I like it"})
# TEI answers a single input with one flat list; the client keeps its first (best) element.
assert top.label == scores[0]["label"], (top, scores)
assert abs(top.score - scores[0]["score"]) < 1e-6, (top, scores)

# rerank: the client has no task for it; post through the library's own HTTP session.
session = huggingface_hub.get_session()
body = {"query": "what is a GEMM", "texts": ["A GEMM multiplies matrices.", "Paris"], "return_text": True}
r = session.post(URL + "/models/ce/rerank", json=body, headers=clf.headers)
r.raise_for_status()
ranks = r.json()
assert ranks == raw("/models/ce/rerank", body), ranks
assert sorted(x["index"] for x in ranks) == [0, 1] and ranks[0]["score"] >= ranks[1]["score"], ranks
r = session.post(URL + "/models/ce/", json=body, headers=clf.headers)
assert r.json() == ranks, r.text

# OpenAI: base64 by default (decoded by the SDK), float on request, models listed and selected.
oa = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)
models = [m.id for m in oa.models.list()]
assert models == [DEFAULT, "ce", "clf"], models
e = oa.embeddings.create(model=DEFAULT, input=texts)
assert [d.index for d in e.data] == [0, 1]
for d, w in zip(e.data, want):
    close(d.embedding, w)
assert e.model == DEFAULT and e.usage.prompt_tokens > 0, e
f = oa.embeddings.create(model=DEFAULT, input=texts[0], encoding_format="float", dimensions=8)
norm = math.sqrt(sum(x * x for x in f.data[0].embedding))
assert len(f.data[0].embedding) == 8 and abs(norm - 1.0) < 1e-5, f
try:
    oa.embeddings.create(model="no-such-model", input="x")
    raise AssertionError("an unknown model with several served must fail")
except openai.NotFoundError as err:
    assert "no-such-model" in str(err), err
try:
    oa.embeddings.create(model=DEFAULT, input=[])
    raise AssertionError("an empty input must fail")
except openai.BadRequestError:
    pass
print("ok: feature_extraction, sentence_similarity, text_classification, rerank, openai embeddings/models")
