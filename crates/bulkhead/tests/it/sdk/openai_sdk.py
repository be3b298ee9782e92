"""Drives a running bulkhead with the official OpenAI Python SDK.

Called by the Rust end-to-end test with the base URL and two tenant API
keys; prints one JSON object with what it observed, which the test checks.
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

    out["models_a"] = sorted(m.id for m in a.models.list())
    out["models_b"] = sorted(m.id for m in b.models.list())

    r = a.chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "hello from the sdk"}],
        temperature=0.2,
    )
    out["plain"] = {
        "content": r.choices[0].message.content,
        "finish_reason": r.choices[0].finish_reason,
        "model": r.model,
        "prompt_tokens": r.usage.prompt_tokens,
        "completion_tokens": r.usage.completion_tokens,
    }

    chunks = a.chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for c in chunks:
        if c.choices:
            text += c.choices[0].delta.content or ""
        if c.usage is not None:
            usage = c.usage.completion_tokens
    out["stream"] = {"content": text, "completion_tokens": usage}

    r = a.chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "post to slack"}],
        tools=[{"type": "function", "function": {"name": "notify", "description": "post a message",
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    call = r.choices[0].message.tool_calls[0]
    out["tool_call"] = {"name": call.function.name, "arguments": json.loads(call.function.arguments),
                        "finish_reason": r.choices[0].finish_reason}

    r = a.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello anthropic"}],
    )
    out["anthropic"] = {"content": r.choices[0].message.content, "model": r.model}

    chunks = a.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "stream anthropic"}], stream=True,
    )
    out["anthropic_stream"] = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)

    try:
        a.chat.completions.create(model="does-not-exist", messages=[{"role": "user", "content": "x"}])
        out["unknown_model"] = "no error"
    except openai.NotFoundError as e:
        out["unknown_model"] = e.code

    try:
        b.chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
        out["b_small"] = "no error"
    except openai.NotFoundError as e:
        out["b_small"] = e.code

    try:
        OpenAI(base_url=base_url + "/v1", api_key="bk_wrong", max_retries=0).models.list()
        out["bad_key"] = "no error"
    except openai.AuthenticationError as e:
        out["bad_key"] = e.code

    print(json.dumps(out))


if __name__ == "__main__":
    main()
