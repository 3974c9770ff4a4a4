"""Past the largest model, a person: the ``human:`` configuration, its triggers and the route decision.

Three handling tiers on the calibrated confidence of the answer that would be returned:
``automated`` (>= automate), ``human_assisted`` (assist..automate, the AI draft goes with it) and
``human_primary`` (< assist). Four triggers override confidence: the customer asks for a person
(honoured before any model call), a topic that belongs to a human, a frustrated customer, and no
model being confident. When calibration or thresholds cannot be applied the request goes to
``human_assisted``, never silently to ``automated``.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HumanRoute = Literal["human_assisted", "human_primary"]

DEFAULT_HUMAN_REQUEST_PATTERNS = [
    r"\b(talk|speak|chat|connect me)\s+(to|with)\s+(a|an|some|your)?\s*(real\s+)?"
    r"(human|person|agent|representative|someone|operator|manager|supervisor)\b",
    r"\b(human|live|real)\s+(agent|person|support|being)\b",
    r"\b(get|want|need)\s+(me\s+)?(a|an)\s+(human|person|representative|agent)\b",
]
DEFAULT_FRUSTRATION_WORDS = [
    "ridiculous", "useless", "terrible", "worst", "angry", "furious", "frustrated", "frustrating", "annoyed",
    "annoying", "unacceptable", "waste of time", "not helpful", "still not working", "still doesn't work",
    "fed up", "awful", "pathetic", "scam", "joke", "wtf", "hate", "sick of", "horrible", "disgusted",
]
DEFAULT_CLARIFY_PROMPT = (
    "Before answering, ask the user exactly one short clarifying question that would let you answer "
    "their last message correctly. Reply with the question only."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HumanThresholds(_Strict):
    automate: float = Field(0.85, ge=0.0, le=1.0, description="at or above: answered automatically")
    assist: float = Field(0.5, ge=0.0, le=1.0, description="at or above (below automate): human-assisted")

    @model_validator(mode="after")
    def _ordered(self) -> HumanThresholds:
        if self.assist > self.automate:
            raise ValueError(f"assist ({self.assist:g}) must not exceed automate ({self.automate:g})")
        return self


class TextRule(_Strict):
    """Keywords (whole words, any case) or regular expressions that match a request's text."""

    name: str
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regular expression: {exc}") from exc
        return patterns

    def matches(self, text: str) -> bool:
        return _rule_regex(tuple(self.keywords), tuple(self.patterns)).search(text) is not None


class DomainRule(TextRule):
    """Thresholds for one domain or topic where accuracy differs from the default."""

    thresholds: HumanThresholds


class TopicRule(TextRule):
    route: HumanRoute = "human_assisted"
    draft: bool = Field(True, description="let the AI draft an answer for the human")


class HumanRequestTrigger(_Strict):
    enabled: bool = True
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_HUMAN_REQUEST_PATTERNS))


class FrustrationTrigger(_Strict):
    enabled: bool = True
    detector: str = Field("default", description="'default' or 'module:function' returning 0..1")
    threshold: float = Field(0.6, ge=0.0, le=1.0)
    route: HumanRoute = "human_assisted"
    draft: bool = True


class Triggers(_Strict):
    human_request: HumanRequestTrigger = Field(default_factory=HumanRequestTrigger)
    topics: list[TopicRule] = Field(default_factory=list)
    topic_classifier: str | None = Field(None, description="'module:function' returning a topic name or None")
    frustration: FrustrationTrigger = Field(default_factory=FrustrationTrigger)
    no_confident_model: bool = Field(True, description="hand off when no model reached its threshold")


class ClarifySettings(_Strict):
    enabled: bool = False
    band: tuple[float, float] = Field((0.4, 0.6), description="confidence range that asks instead of escalating")
    model: str | None = Field(None, description="model that writes the question; default: the one that answered")
    max_per_conversation: int = Field(1, ge=0)
    prompt: str = DEFAULT_CLARIFY_PROMPT
    state: Literal["memory", "store", "redis"] = Field(
        "memory", description="where the per-conversation count lives: 'memory' (this process only), 'store' "
        "(the SQL store, shared by replicas) or 'redis' (shared by replicas)")
    url: str | None = Field(
        None, description="state 'store': a SQLite path or postgresql:// URL (default: human.store); "
        "state 'redis': a redis:// URL (default: REDIS_URL, else REDIS_HOST/REDIS_PORT/REDIS_PASSWORD)")
    ttl_s: float = Field(30 * 86400.0, gt=0, description="a conversation's count is forgotten this long after "
                         "its last clarifying question (store and redis)")
    timeout_s: float = Field(1.0, gt=0, le=30, description="longest wait for the shared count; past it (or when "
                             "the state is unreachable) no question is asked and the request escalates")

    @field_validator("band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        lo, hi = band
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"band must be [low, high] within 0..1 with low <= high (got {list(band)})")
        return band


class ArmSettings(_Strict):
    thresholds: HumanThresholds | None = None
    model_thresholds: dict[str, float] = Field(default_factory=dict)
    registry_version: int | None = Field(None, ge=1, description="this arm's model thresholds and calibrations "
                                         "are this threshold-registry version's (needs a registry: section)")

    @model_validator(mode="after")
    def _one_source(self) -> ArmSettings:
        if self.registry_version is not None and self.model_thresholds:
            raise ValueError("give an arm registry_version or model_thresholds, not both")
        return self

    @field_validator("model_thresholds")
    @classmethod
    def _unit(cls, values: dict[str, float]) -> dict[str, float]:
        for name, v in values.items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"threshold for {name!r} must be within 0..1 (got {v})")
        return values


class ABTest(_Strict):
    key: Literal["user", "request", "conversation"] = "user"
    treatment_share: float = Field(0.1, ge=0.0, le=1.0)
    salt: str = "confidence-router"
    control: ArmSettings = Field(default_factory=ArmSettings)
    treatment: ArmSettings = Field(default_factory=ArmSettings)


class RecordingSettings(_Strict):
    """How decisions reach the review store and audit log: a bounded queue and a background writer."""

    queue_size: int = Field(10_000, ge=1, description="decisions waiting to be written, at most")
    batch_size: int = Field(200, ge=1, description="decisions per store transaction / audit append")
    batch_wait_s: float = Field(0.5, ge=0.0, le=5.0, description="longest wait to fill a batch (a decision "
                                "reaches the store at most this much later; flush and shutdown do not wait)")
    on_full: Literal["block", "drop"] = Field(
        "block", description="full queue: 'block' waits up to block_timeout_s (never on an event loop), "
        "then drops; 'drop' drops at once. Drops are counted, logged and noted in the trace")
    block_timeout_s: float = Field(0.05, ge=0.0, le=5.0, description="longest wait for room with on_full=block")
    flush_timeout_s: float = Field(10.0, ge=0.0, description="longest wait to write the queue at shutdown")


class HumanSettings(_Strict):
    enabled: bool = True
    thresholds: HumanThresholds = Field(default_factory=HumanThresholds)
    domains: list[DomainRule] = Field(default_factory=list)
    triggers: Triggers = Field(default_factory=Triggers)
    clarify: ClarifySettings = Field(default_factory=ClarifySettings)
    ab_test: ABTest | None = None
    handoff_reply: str = Field("Thanks, a member of our team will follow up on this shortly.",
                               description="reply text when no AI answer goes out (LiteLLM adapter)")
    store_text: bool = Field(False, description="keep prompt and draft text in traces, queue and audit log")
    store: str | None = Field(None, description="review queue: a SQLite file path or a postgresql:// URL")
    spot_check_rate: float = Field(0.02, ge=0.0, le=1.0,
                                   description="share of automated answers also queued for review")
    audit_log: str | None = Field(None, description="JSONL file: one line per routing decision")
    recording: RecordingSettings = Field(default_factory=RecordingSettings)


# ------------------------------------------------------------------------------------------ triggers


@lru_cache(maxsize=256)
def _rule_regex(keywords: tuple[str, ...], patterns: tuple[str, ...]) -> re.Pattern[str]:
    parts = [rf"\b{re.escape(k)}\b" for k in keywords] + [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts) if parts else r"(?!x)x", re.IGNORECASE)


def asks_for_human(text: str, trigger: HumanRequestTrigger) -> bool:
    return trigger.enabled and _rule_regex((), tuple(trigger.patterns)).search(text) is not None


def default_frustration(text: str) -> float:
    """A simple, documented default: frustration words, shouting and repeated '!' or '?'.

    Each frustration word or phrase adds 0.35, a message mostly in capitals adds 0.4, and '!!'/'??'
    runs add 0.2 each; the sum is capped at 1. Swap in a real sentiment model via ``detector``.
    """
    lowered = text.lower()
    score = 0.35 * sum(1 for w in DEFAULT_FRUSTRATION_WORDS if re.search(rf"\b{re.escape(w)}\b", lowered))
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score += 0.4
    score += 0.2 * len(re.findall(r"[!?]{2,}", text))
    return min(1.0, score)


def load_callable(spec: str) -> Callable[..., object]:
    """Import ``module:function``; a bad spec is a configuration error."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not 'module:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"{spec!r} is not callable")
    return fn


@dataclass(frozen=True)
class PreCallDecision:
    """What the triggers say before any model is called."""

    trigger: str | None = None
    route: HumanRoute | None = None
    draft: bool = True


def check_triggers(text: str, settings: HumanSettings) -> PreCallDecision:
    """Apply the request-text triggers in order: human request, topic rules, classifier, frustration."""
    triggers = settings.triggers
    if not text:
        return PreCallDecision()
    if asks_for_human(text, triggers.human_request):
        return PreCallDecision("human_request", "human_primary", draft=False)
    for topic in triggers.topics:
        if topic.matches(text):
            return PreCallDecision(f"topic:{topic.name}", topic.route, topic.draft)
    if triggers.topic_classifier:
        name = load_callable(triggers.topic_classifier)(text)
        if name:
            rule = next((t for t in triggers.topics if t.name == name), None)
            return PreCallDecision(f"topic:{name}", rule.route if rule else "human_assisted",
                                   rule.draft if rule else True)
    f = triggers.frustration
    if f.enabled:
        detector = default_frustration if f.detector == "default" else load_callable(f.detector)
        if float(detector(text)) >= f.threshold:  # type: ignore[arg-type]
            return PreCallDecision("frustration", f.route, f.draft)
    return PreCallDecision()


def thresholds_for(text: str, settings: HumanSettings, arm: ArmSettings | None) -> tuple[HumanThresholds, str]:
    """The thresholds in force: the A/B arm's, else the first matching domain's, else the default."""
    if arm is not None and arm.thresholds is not None:
        return arm.thresholds, "arm"
    for domain in settings.domains:
        if text and domain.matches(text):
            return domain.thresholds, f"domain:{domain.name}"
    return settings.thresholds, "default"


def route_for(confidence: float, thresholds: HumanThresholds) -> str:
    if confidence >= thresholds.automate:
        return "automated"
    return "human_assisted" if confidence >= thresholds.assist else "human_primary"


# ------------------------------------------------------------------------------------------ A/B


def assign_arm(key: str, treatment_share: float, salt: str = "confidence-router") -> str:
    """Deterministic arm for a key: the same key always lands in the same arm, in any process."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "treatment" if bucket < treatment_share else "control"


# ------------------------------------------------------------------------------------------ clarify


class ClarifyState:
    """Where clarify-once counts live; ``claim`` takes one of a conversation's questions atomically.

    The core keeps this interface and the in-process :class:`ClarifyLedger`; the shared ones (the SQL
    store, Redis) live in the human-operations package and are wired with
    :func:`~langchain_confidence_router.core.engine.register_clarify_state`. The policy asks for a claim
    only when an answer's confidence lands in the clarify band, and the drive loop runs it: directly
    when ``blocking`` is False, in a worker thread (bounded by ``timeout_s``) on async paths otherwise.
    """

    #: Whether ``claim`` does I/O (a database or network round trip).
    blocking: bool = False
    #: Longest wait for a claim on an async path; past it the request escalates instead of asking.
    timeout_s: float | None = None
    name: str = "memory"

    def claim(self, key: str, limit: int) -> bool:
        """Count one more clarifying question for ``key`` if it has had fewer than ``limit``; whether it did.

        Must be atomic across every process sharing the state. Raise when the state is unreachable."""
        raise NotImplementedError


class ClarifyLedger(ClarifyState):
    """How many clarifying questions each conversation has had, in this process only (LRU-bounded).

    With several replicas, set ``human.clarify.state`` to ``store`` or ``redis`` so every replica sees
    the same count.
    """

    def __init__(self, max_conversations: int = 100_000) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_conversations

    def count(self, key: str | None) -> int:
        if key is None:
            return 0
        with self._lock:
            return self._counts.get(key, 0)

    def add(self, key: str | None) -> None:
        if key is None:
            return
        with self._lock:
            self._add(key)

    def claim(self, key: str, limit: int) -> bool:
        with self._lock:
            if self._counts.get(key, 0) >= limit:
                return False
            self._add(key)
            return True

    def _add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._counts.move_to_end(key)
        while len(self._counts) > self._max:
            self._counts.popitem(last=False)


CLARIFY_LEDGER = ClarifyLedger()


def conversation_key(first_user_text: str, user: str | None = None) -> str:
    """A stable key for a conversation when the caller gives none: its user and first message."""
    return hashlib.sha256(f"{user or ''}\x00{first_user_text}".encode()).hexdigest()[:24]
