"""External LLM prompts: a prompt's text and a document sent to an OpenAI or Azure OpenAI
provider, its structured JSON answer validated and turned into regions. No Ray here.

Each replica holds one `ProviderClient` per provider: the official `openai` client
(`AzureOpenAI` for Azure) and a small thread pool that bounds the calls in flight to that
provider (`concurrency`). Every request has a timeout; retries are the client's own
(`max_retries`): connection errors, timeouts, 408, 409, 429 and 5xx are retried with
exponential backoff and jitter (0.5 s doubling to 8 s), honouring `Retry-After`.

An answer is JSON asked for with `response_format` (a JSON schema, strict) and checked
with pydantic. Entities are the chunks the model copies from the text: each is located as
exact character offsets, as a whole chunk (never inside a longer word), at every
occurrence unless the answer names which ones. A chunk that is not in the text is
dropped. An answer that cannot be parsed or checked, or a call that fails after its
retries, fails that document with the reason; the others go on. Each document's result
counts the HTTP requests made (retries included) and the tokens the provider reported.
"""

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from preannotate.annotators.spans import Source, Span
from preannotate.configs.prompts import ExternalPrompt

if TYPE_CHECKING:  # the client loads with the first provider (0.8 s a process otherwise)
    import openai

REQUEST_TIMEOUT_S = 60.0
CONCURRENCY = 4
MAX_RETRIES = 3
"""Retries after the first request (the client's own, with its backoff)."""
VALIDATION_TEXT = "Say OK."
CHOICE_CONFIDENCE = 1.0
"""An LLM's choice carries no calibrated confidence; it is reported as a certain one."""


@dataclass(frozen=True)
class ProviderAccess:
    """How to reach a provider; the key is left out of `repr`, so no log line shows it."""

    name: str
    kind: Literal["openai", "azure-openai"]
    base_url: str
    api_key: str = field(repr=False)
    api_version: str | None = None
    timeout_s: float = REQUEST_TIMEOUT_S
    concurrency: int = CONCURRENCY


@dataclass
class Usage:
    """Requests made (retries included) and tokens the provider reported."""

    llm_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.llm_requests += other.llm_requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def as_json(self) -> dict[str, int]:
        return {
            "llm_requests": self.llm_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class ProviderError(Exception):
    """A call that failed after its retries; the message names the provider, never its key."""

    def __init__(self, message: str, usage: Usage):
        super().__init__(message)
        self.message = message
        self.usage = usage


class _Chunk(BaseModel):
    text: str = Field(min_length=1)
    label: str
    occurrences: list[int] | None = None


class _Entities(BaseModel):
    entities: list[_Chunk]


class _Choice(BaseModel):
    label: str


def _schema(output: str, labels: list[str]) -> dict[str, Any]:
    """The strict JSON schema of the answer, as `response_format` sends it."""
    label = {"type": "string", "enum": labels}
    if output == "classification":
        body: dict[str, Any] = {
            "type": "object",
            "properties": {"label": label},
            "required": ["label"],
            "additionalProperties": False,
        }
    else:
        chunk = {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "label": label,
                "occurrences": {"type": ["array", "null"], "items": {"type": "integer"}},
            },
            "required": ["text", "label", "occurrences"],
            "additionalProperties": False,
        }
        body = {
            "type": "object",
            "properties": {"entities": {"type": "array", "items": chunk}},
            "required": ["entities"],
            "additionalProperties": False,
        }
    return {"type": "json_schema", "json_schema": {"name": output, "strict": True, "schema": body}}


def _instructions(prompt: ExternalPrompt) -> str:
    labels = ", ".join(prompt.labels)
    if prompt.output == "classification":
        task = f'Answer with JSON {{"label": ...}}: the one label among {labels} that fits.'
    else:
        task = (
            f'Answer with JSON {{"entities": [...]}}: each entity\'s label (one of {labels}), '
            "its text copied exactly from the document, and `occurrences`: which occurrences "
            "of that text are meant (1 is the first), or null for all of them."
        )
    return f"{prompt.text}\n\n{task}"


@dataclass
class LlmResult:
    """One document's answer: spans (entity prompts) or a label, or the reason there is
    none; and what the call cost."""

    usage: Usage
    spans: list[Span] = field(default_factory=list)
    choice: str | None = None
    error: str | None = None


class ProviderClient:
    """One provider's `openai` client and the pool that bounds its calls in flight."""

    def __init__(self, access: ProviderAccess, max_retries: int = MAX_RETRIES):
        import openai

        self.access = access
        self._requests = threading.local()
        http = openai.DefaultHttpxClient(event_hooks={"request": [self._count_request]})
        common: dict[str, Any] = {
            "api_key": access.api_key,
            "timeout": access.timeout_s,
            "max_retries": max_retries,
            "http_client": http,
        }
        if access.kind == "azure-openai":
            self.client: openai.OpenAI = openai.AzureOpenAI(
                azure_endpoint=access.base_url, api_version=access.api_version, **common
            )
        else:
            self.client = openai.OpenAI(base_url=access.base_url, **common)
        self.pool = ThreadPoolExecutor(access.concurrency, thread_name_prefix=f"llm-{access.name}")

    def _count_request(self, _: Any) -> None:
        self._requests.count = getattr(self._requests, "count", 0) + 1

    def _scrub(self, message: str) -> str:
        return message.replace(self.access.api_key, "[key]")

    def chat(self, model: str, messages: list[dict[str, str]], **options: Any) -> tuple[str, Usage]:
        """One chat completion (retried by the client): the answer's text and its usage.
        Runs in the calling thread; `map` runs many through the pool."""
        import openai

        self._requests.count = 0
        usage = Usage()
        try:
            completion = self.client.chat.completions.create(
                model=model,
                messages=messages,
                **options,  # type: ignore[arg-type]
            )
        except openai.APIError as exc:
            usage.llm_requests = self._requests.count
            raise ProviderError(
                self._scrub(f"provider '{self.access.name}': {_describe(exc)}"), usage
            ) from None
        usage.llm_requests = self._requests.count
        if completion.usage is not None:
            usage.prompt_tokens = completion.usage.prompt_tokens
            usage.completion_tokens = completion.usage.completion_tokens
        choices = completion.choices
        content = choices[0].message.content if choices else None
        if not content:
            reason = choices[0].finish_reason if choices else "no choices"
            raise ProviderError(
                f"provider '{self.access.name}' gave an empty answer ({reason})", usage
            )
        return content, usage

    def map(self, call: Callable[[str], LlmResult], texts: Sequence[str]) -> list[LlmResult]:
        """`call` over the texts, at most `concurrency` at a time, results in order."""
        return list(self.pool.map(call, texts))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _describe(exc: "openai.APIError") -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc.message}"


def locate(text: str, chunk: str, occurrences: list[int] | None = None) -> list[tuple[int, int]]:
    """Offsets of `chunk` in `text` as a whole chunk (not inside a longer word): each
    occurrence, or the 1-based `occurrences` named (those that do not exist are ignored)."""
    chunk = chunk.strip()
    if not chunk:
        return []
    before = r"(?<!\w)" if chunk[0].isalnum() else ""
    after = r"(?!\w)" if chunk[-1].isalnum() else ""
    found = [(m.start(), m.end()) for m in re.finditer(before + re.escape(chunk) + after, text)]
    if occurrences is None:
        return found
    return [found[i - 1] for i in sorted(set(occurrences)) if 1 <= i <= len(found)]


class ExternalPromptRunner:
    """One external prompt on one provider: documents in, regions out."""

    def __init__(self, prompt: ExternalPrompt, client: ProviderClient):
        self.prompt = prompt
        self.client = client
        self.source = Source("prompt", prompt.name, str(prompt.version))
        self.options: dict[str, Any] = {
            "temperature": prompt.temperature,
            "max_completion_tokens": prompt.max_tokens,
            "response_format": _schema(prompt.output, prompt.labels),
        }

    def run(self, texts: Sequence[str]) -> list[LlmResult]:
        """One result per text, in order; a failure stays with its document."""
        return self.client.map(self._one, texts)

    def _one(self, text: str) -> LlmResult:
        messages = [
            {"role": "system", "content": _instructions(self.prompt)},
            {"role": "user", "content": text},
        ]
        where = f"prompt '{self.prompt.name}' v{self.prompt.version}"
        try:
            content, usage = self.client.chat(self.prompt.model, messages, **self.options)
        except ProviderError as exc:
            return LlmResult(exc.usage, error=f"{where}: {exc.message}")
        try:
            return self._read(text, content, usage)
        except (ValueError, ValidationError) as exc:
            return LlmResult(usage, error=f"{where}: the answer is not valid: {_problem(exc)}")

    def _read(self, text: str, content: str, usage: Usage) -> LlmResult:
        offered = self.prompt.labels
        if self.prompt.output == "classification":
            choice = _Choice.model_validate_json(content).label
            if choice not in offered:
                raise ValueError(f"label {choice!r} is not one of {', '.join(offered)}")
            return LlmResult(usage, choice=choice)
        answer = _Entities.model_validate_json(content)
        spans = []
        for chunk in answer.entities:
            if chunk.label not in offered:
                raise ValueError(f"label {chunk.label!r} is not one of {', '.join(offered)}")
            spans += [
                Span(start, end, chunk.label, self.source)
                for start, end in locate(text, chunk.text, chunk.occurrences)
            ]
        return LlmResult(usage, spans=sorted(set(spans), key=lambda s: (s.start, s.end)))


def _problem(exc: Exception) -> str:
    """A short, one-line reason: pydantic's first problem, or the error's message."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        place = ".".join(map(str, first["loc"])) or "answer"
        return f"{place}: {first['msg']} ({exc.error_count()} problem(s))"
    return str(exc)


def validate_provider(access: ProviderAccess, model: str) -> dict[str, Any]:
    """Call the provider once with a tiny chat completion: what `providers validate`
    reports, the answer or the error (without retries, so a bad key answers at once)."""
    client = ProviderClient(access, max_retries=0)
    try:
        content, usage = client.chat(
            model, [{"role": "user", "content": VALIDATION_TEXT}], max_completion_tokens=5
        )
        return {"ok": True, "answer": content, "error": None, **usage.as_json()}
    except ProviderError as exc:
        return {"ok": False, "answer": None, "error": exc.message, **exc.usage.as_json()}
    finally:
        client.close()


Outputs = dict[tuple[str, str, str], dict[int, Any]]


class ExternalPrompts:
    """A pipeline's external prompts, each with the object it reads, on their providers'
    clients (one per provider, shared by its prompts)."""

    def __init__(
        self,
        uses: Sequence[tuple[ExternalPrompt, str]],
        providers: Mapping[str, ProviderAccess],
    ):
        needed = {prompt.provider for prompt, _ in uses}
        self.clients = {name: ProviderClient(providers[name]) for name in sorted(needed)}
        self.uses = [
            (ExternalPromptRunner(prompt, self.clients[prompt.provider]), obj)
            for prompt, obj in uses
        ]

    def outputs(
        self, texts: list[dict[str, str]], errors: list[str | None], usage: dict[int, Usage]
    ) -> Outputs:
        """`("prompt", name, object) -> row -> spans | {choice: confidence}` for the rows
        without an error; a failed answer sets that row's error. Each row's calls are
        added to `usage`."""
        outputs: Outputs = {}
        for runner, obj in self.uses:
            rows = [row for row, error in enumerate(errors) if error is None]
            found: dict[int, Any] = {}
            for row, result in zip(rows, runner.run([texts[r][obj] for r in rows]), strict=True):
                usage.setdefault(row, Usage()).add(result.usage)
                if result.error is not None:
                    errors[row] = result.error
                elif runner.prompt.output == "classification":
                    found[row] = {result.choice: CHOICE_CONFIDENCE}
                else:
                    found[row] = result.spans
            outputs[("prompt", runner.prompt.name, obj)] = found
        return outputs

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
