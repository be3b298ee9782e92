"""Drives a running bulkhead's embeddings, model and Responses endpoints
with the official OpenAI Python SDK.

Called by the Rust end-to-end test with the base URL and two tenant API
keys; prints one JSON object with what it observed, which the test checks.
The provider behind is the fake, which answers "echo: <last user text>"
unless the test queued a reply.
"""

import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, key_a, key_b = sys.argv[1], sys.argv[2], sys.argv[3]
    a = OpenAI(base_url=base_url + "/v1", api_key=key_a, max_retries=0)
    b = OpenAI(base_url=base_url + "/v1", api_key=key_b, max_retries=0)
    out = {}

    # Embeddings: the SDK asks for base64 unless told otherwise, and
    # decodes it back to floats.
    r = a.embeddings.create(model="embed", input="hello embeddings")
    out["embed_single"] = {
        "count": len(r.data),
        "dims": len(r.data[0].embedding),
        "float": isinstance(r.data[0].embedding[0], float),
        "model": r.model,
        "prompt_tokens": r.usage.prompt_tokens,
    }
    r = a.embeddings.create(model="embed", input=["one", "two", "three"])
    out["embed_batch"] = {"indexes": [d.index for d in r.data], "dims": [len(d.embedding) for d in r.data]}
    f = a.embeddings.create(model="embed", input=["one", "two", "three"], encoding_format="float")
    out["embed_same"] = all(
        max(abs(x - y) for x, y in zip(p.embedding, q.embedding)) < 1e-6 for p, q in zip(r.data, f.data)
    )
    try:
        b.embeddings.create(model="embed", input="x")
        out["embed_b"] = "no error"
    except openai.NotFoundError as e:
        out["embed_b"] = e.code

    # Models: retrieve as listed; another tenant's view is its own.
    m = a.models.retrieve("small")
    out["retrieve"] = {"id": m.id, "object": m.object}
    try:
        b.models.retrieve("small")
        out["retrieve_b"] = "no error"
    except openai.NotFoundError as e:
        out["retrieve_b"] = e.code

    # Responses: plain.
    r = a.responses.create(model="small", input="hello responses", instructions="be brief")
    out["responses_plain"] = {
        "id_prefix": r.id[:5],
        "status": r.status,
        "text": r.output_text,
        "total": r.usage.total_tokens,
        "sum": r.usage.input_tokens + r.usage.output_tokens,
    }
    first = r.id

    # Continued with previous_response_id (the fake echoes the last user text).
    r = a.responses.create(model="small", input="and again", previous_response_id=first)
    out["responses_continued"] = r.output_text
    out["responses_retrieved"] = a.responses.retrieve(first).output_text
    try:
        b.responses.create(model="small", input="steal", previous_response_id=first)
        out["responses_b"] = "no error"
    except openai.NotFoundError as e:
        out["responses_b"] = e.code
    try:
        b.responses.retrieve(first)
        out["responses_b_get"] = "no error"
    except openai.NotFoundError as e:
        out["responses_b_get"] = e.code

    # Streamed: raw events, then the SDK's stream helper.
    kinds, text = [], ""
    for event in a.responses.create(model="small", input="stream me", stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    out["responses_stream"] = {"first": kinds[0], "last": kinds[-1], "text": text}
    with a.responses.stream(model="small", input="stream helper") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    out["responses_stream_helper"] = final.output_text

    # A function tool: the call, then its output sent back.
    tools = [{"type": "function", "name": "lookup", "description": "weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]
    r = a.responses.create(model="small", input="weather in Oslo?", tools=tools)
    call = next(item for item in r.output if item.type == "function_call")
    out["responses_tool"] = {"name": call.name, "arguments": json.loads(call.arguments)}
    r = a.responses.create(
        model="small", previous_response_id=r.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    out["responses_tool_after"] = r.output_text

    # Streamed tool call: argument deltas.
    args = ""
    for event in a.responses.create(model="small", input="weather?", tools=tools, stream=True):
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
    out["responses_tool_stream"] = json.loads(args)

    # Unsupported built-in tools: a clear 400 naming the member.
    try:
        a.responses.create(model="small", input="x", tools=[{"type": "web_search"}])
        out["responses_web_search"] = "no error"
    except openai.BadRequestError as e:
        out["responses_web_search"] = e.param

    print(json.dumps(out))


if __name__ == "__main__":
    main()
