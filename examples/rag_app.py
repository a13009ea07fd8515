"""A small RAG pipeline traced with the `keel` SDK, its model call going through the gateway.

    .venv/bin/python examples/rag_app.py "What does Keel record?"   # with `make run` serving
    KEEL_DATABASE_URL=sqlite:///.keel/demo.db .venv/bin/keel traces tree <printed trace id>

Every step is a span of one trace (retrieve, rerank, build the prompt, generate,
post-process); the gateway's own generation span lands inside it because
`keel.openai_client()` sends the current span's `traceparent`. `KEEL_HOST` (default
http://127.0.0.1:4000) says where Keel runs.
"""

from __future__ import annotations

import os
import re
import sys

import keel

DOCUMENTS = {
    "gateway": "Keel's gateway speaks the OpenAI API and forwards each call to a configured "
    "provider, with retries and fallbacks.",
    "recording": "Keel records every call: messages, tokens by kind, cost, latency, time to "
    "first token, status and every attempt.",
    "tracing": "Applications send spans with the keel SDK or any OpenTelemetry exporter; "
    "each request becomes one trace tree.",
    "scores": "Scores and user feedback attach to traces, spans or sessions.",
}


@keel.observe(kind="retrieval")
def retrieve(question: str, k: int = 3) -> list[dict[str, object]]:
    words = set(re.findall(r"\w+", question.lower()))
    scored = [
        {"id": name, "text": text, "score": len(words & set(re.findall(r"\w+", text.lower())))}
        for name, text in DOCUMENTS.items()
    ]
    return sorted(scored, key=lambda doc: -int(str(doc["score"])))[:k]


@keel.observe(kind="rerank")
def rerank(question: str, documents: list[dict[str, object]]) -> list[dict[str, object]]:
    return [doc for doc in documents if int(str(doc["score"])) > 0] or documents[:1]


@keel.observe(kind="span")
def build_prompt(question: str, documents: list[dict[str, object]]) -> list[dict[str, str]]:
    context = "\n".join(f"[Source: {doc['id']}] {doc['text']}" for doc in documents)
    return [
        {"role": "system", "content": "Answer from the context only; cite [Source: X]."},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


@keel.observe(kind="generation")
def generate(messages: list[dict[str, str]], model: str = "fast") -> str:
    host = os.environ.get("KEEL_HOST", "http://127.0.0.1:4000")
    client = keel.openai_client(base_url=f"{host}/v1")
    reply = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


@keel.observe(kind="guardrail")
def post_process(answer: str) -> str:
    return answer.strip()


@keel.observe(name="rag answer", kind="chain")
def answer(question: str, user: str = "demo-user") -> str:
    keel.update_current_trace(user_id=user, session_id=f"{user}-session", tags=["rag", "demo"])
    documents = rerank(question, retrieve(question))
    return post_process(generate(build_prompt(question, documents)))


def main() -> int:
    question = " ".join(sys.argv[1:]) or "What does Keel record for every call?"
    with keel.span("rag request", kind="agent") as request:
        text = answer(question)
        trace_id = request.trace_id
    keel.flush()
    print(f"answer: {text}")
    print(f"trace:  {trace_id}")
    print(f"see it: keel traces tree {trace_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
