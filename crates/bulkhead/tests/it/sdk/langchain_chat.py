"""Drives a running bulkhead with LangChain's OpenAI integration
(langchain-openai): ChatOpenAI (invoke, stream, and over the Responses
API) and OpenAIEmbeddings.

Called by the Rust end-to-end test with the base URL and a tenant API key;
prints one JSON object with what it observed. The fake provider behind
answers "echo: <last user text>".
"""

import json
import sys

from langchain_openai import ChatOpenAI, OpenAIEmbeddings


def main() -> None:
    base_url, key = sys.argv[1], sys.argv[2]
    common = {"base_url": base_url + "/v1", "api_key": key, "max_retries": 0}
    out = {}

    chat = ChatOpenAI(model="small", **common)
    out["invoke"] = chat.invoke("hello langchain").content
    out["stream"] = "".join(chunk.content for chunk in chat.stream("stream langchain"))

    responses = ChatOpenAI(model="small", use_responses_api=True, **common)
    msg = responses.invoke("hello responses api")
    out["responses_invoke"] = msg.text if isinstance(msg.text, str) else msg.text()
    text = ""
    for chunk in responses.stream("stream responses api"):
        t = chunk.text if isinstance(chunk.text, str) else chunk.text()
        text += t
    out["responses_stream"] = text

    # Text, not token arrays: LangChain tokenizes with tiktoken (whose
    # encodings it would download) unless told not to.
    emb = OpenAIEmbeddings(model="embed", check_embedding_ctx_length=False, **common)
    docs = emb.embed_documents(["first document", "second document"])
    query = emb.embed_query("first document")
    out["embed_documents"] = [len(d) for d in docs]
    out["embed_query_matches"] = max(abs(x - y) for x, y in zip(query, docs[0])) < 1e-6

    print(json.dumps(out))


if __name__ == "__main__":
    main()
