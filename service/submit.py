"""POST /v1/jobs behind the route: validate, commit as submitting, call the provider, record."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from service import catalog, ledger, netguard
from service.config import Settings
from service.errors import ApiError
from service.providers import missing_variables
from service.providers.base import Provider, ProviderError
from service.store import Idempotent, Job, Store, Tx
from service.tokens import Tokens

Answer = tuple[int, dict[str, Any]]
REPLAY_WAIT = 60.0


def request_hash(body: Any) -> str:
    """A digest of a request body, independent of key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


MAX_LISTED = 20
_CLIP_FIELD, _CLIP_MESSAGE = 128, 512


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid(problems: list[catalog.Problem]) -> ApiError:
    """The 422 answer: the first 20 problems in `details`, then a count of the rest."""
    listed = [
        {"field": _clip(p.field, _CLIP_FIELD), "message": _clip(p.message, _CLIP_MESSAGE)}
        for p in problems[:MAX_LISTED]
    ]
    named = "; ".join(f"{d['field']} {d['message']}" for d in listed[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    if len(problems) > MAX_LISTED:
        rest = len(problems) - MAX_LISTED
        listed.append({"field": "*", "message": f"{rest} more problems not listed"})
    return ApiError(422, "invalid_request", f"{named}{more}", details=listed)


class Submitter:
    """Creates jobs; one provider submission per Idempotency-Key, even when requests race."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        settings: Settings,
        tokens: Tokens,
        clock: Callable[[], float],
        resolve: netguard.Resolver | None = None,
        owner: str | None = None,
    ) -> None:
        self._owner = owner  # holds the lease of each submission until the provider answers
        self._resolve = resolve
        self._store = store
        self._providers = providers
        self._settings = settings
        self._tokens = tokens
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[Answer]] = {}

    def _provider(self, model: catalog.Model) -> Provider:
        provider = self._providers.get(model.provider)
        if provider is None:
            variables = missing_variables(model.provider, self._settings)
            raise ApiError(
                503,
                "provider_not_configured",
                f"{model.provider} is not configured: set {' and '.join(variables)} "
                f"(and restart the relay) to use {model.id}",
                details={"provider": model.provider, "variables": variables},
            )
        return provider

    async def submit(self, body: Any, idem_key: str | None, scope: str, dry_run: bool) -> Answer:
        """Validate and run a job request; returns (HTTP status, JSON body)."""
        model, problems = catalog.validate_job_request(body)
        if problems or model is None:
            raise invalid(problems)
        if body.get("webhook") is not None:
            await self._check_webhook(body["webhook"])
        provider = self._provider(model)
        params = catalog.normalize(model, body["input"])
        if provider.fetches_media:
            await self._check_media(model, params)
        if dry_run:
            return 200, await self._dry_run(model, provider, params)
        key = f"{scope}:{idem_key}" if idem_key else None
        digest = request_hash(body)
        new = ledger.NewJob(
            id=ledger.new_job_id(),
            model=model.id,
            provider=model.provider,
            input=params,
            metadata=dict(body.get("metadata") or {}),
            webhook=body.get("webhook"),
            webhook_events=body.get("webhook_events_filter"),
        )
        now = self._clock()
        lease_until = now + provider.submission_lease(model, params, self._settings)
        idem = (key, digest) if key else None
        cap = (self._settings.max_in_flight, self._settings.poll_min)
        created = await self._store.write(
            lambda tx: ledger.create_job(tx, new, now, idem, lease_until, cap, self._owner)
        )
        if created.existing is not None:
            return await self._replay(created.existing, digest)
        if created.job is not None and created.job.deferred:
            self._wake_poller()
            return 202, created.job.public()
        task = asyncio.create_task(self._send(model, provider, new.id, params, key))
        if key:
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shielded: a caller that hangs up does not abandon a submission half way
        return await asyncio.shield(task)

    async def _check_webhook(self, url: str) -> None:
        """Refuse a per-job webhook to a private address now, as subscriptions are refused."""
        try:
            await netguard.check_target(
                url, allow_private=self._settings.allow_private_targets, resolve=self._resolve
            )
        except netguard.TargetRefused as exc:
            message = str(exc)
            if "RELAY_ALLOW_PRIVATE_TARGETS" not in message:
                message += " (RELAY_ALLOW_PRIVATE_TARGETS=1 allows private targets)"
            raise invalid([catalog.Problem("webhook", message)]) from None

    async def _check_media(self, model: catalog.Model, params: dict[str, Any]) -> None:
        """Refuse a media URL to a private address now, like a webhook, before a job exists.

        The download checks every address again (redirect hops, a name that answers otherwise
        the second time): a refusal found there fails the job that was recorded."""
        url = params.get(model.media_param)
        if not isinstance(url, str) or not catalog.is_http_url(url):
            return  # a provider asset id: nothing to download
        try:
            await netguard.check_target(
                url, allow_private=self._settings.allow_private_targets, resolve=self._resolve
            )
        except netguard.TargetRefused as exc:
            field = f"input.{model.media_param}"
            raise ApiError(
                422,
                "media_refused",
                f"media URL refused: {exc}",
                details=[{"field": field, "message": _clip(str(exc), _CLIP_MESSAGE)}],
            ) from None

    def _wake_poller(self) -> None:
        self._store.waiter("poll").set()

    async def resume(self, job: Job, retry_at: float) -> None:
        """Submit a job held back by the in-flight cap, if its provider has room now."""
        model = catalog.MODELS[job.model]
        provider = self._provider(model)
        now = self._clock()
        lease_until = now + provider.submission_lease(model, job.input, self._settings)
        cap = self._settings.max_in_flight
        taken = await self._store.write(
            lambda tx: ledger.resume_deferred(tx, job.id, now, cap, retry_at, lease_until)
        )
        if taken is not None:
            await self._send(model, provider, job.id, job.input, None)

    async def _send(
        self,
        model: catalog.Model,
        provider: Provider,
        job_id: str,
        params: dict[str, Any],
        key: str | None,
    ) -> Answer:
        callback = None
        if provider.accepts_callbacks:
            token = self._tokens.make(job_id)
            callback = provider.callback_url(self._settings.public_url, token)
        try:
            report = await provider.submit(model, params, callback)
        except ProviderError as failure:
            exc = failure
            error = ApiError(
                exc.http_status, exc.code, exc.message, details={"job_id": job_id, **exc.details()}
            )
            body = error.body()
            now = self._clock()

            async def failed(tx: Tx) -> None:
                await ledger.fail_job(tx, job_id, exc.code, exc.message, "api", now, exc.details())
                await ledger.store_answer(tx, key, error.status, body)

            await self._store.write(failed)
            return error.status, body
        now = self._clock()
        first_poll = now + provider.first_poll_delay(self._settings)
        job = await self._store.write(
            lambda tx: ledger.record_submitted(tx, job_id, report, now, first_poll, key)
        )
        return 202, job.public()

    async def _replay(self, existing: Idempotent, digest: str) -> Answer:
        """The answer given to the first request with this key (waiting for it if need be)."""
        if existing.request_hash != digest:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLAY_WAIT
        record: Idempotent | None = existing
        while record is not None and record.response is None:
            task = self._inflight.get(record.key)
            if task is not None:
                await asyncio.shield(task)
            elif record.job_id:
                # the first request runs in another process, or died: look at the job itself
                job = await self._store.get_job(record.job_id)
                if job is not None and str(job.status) != "submitting":
                    return 202, job.public()
                if loop.time() > deadline:
                    raise ApiError(
                        409, "idempotency_in_progress", "the first request is still running"
                    )
                await asyncio.sleep(0.05)
            record = await self._store.idempotent(record.key)
        if record is None or record.response is None or record.status_code is None:
            raise ApiError(500, "idempotency_lost", "the stored answer could not be read")
        return record.status_code, record.response

    async def _dry_run(
        self, model: catalog.Model, provider: Provider, params: dict[str, Any]
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "dry_run": True,
            "model": model.id,
            "provider": model.provider,
            "input": params,
            "cost": None,
        }
        try:
            estimate = await provider.estimate(model, params)
        except ProviderError as exc:
            raise ApiError(exc.http_status, exc.code, exc.message, exc.details()) from exc
        if estimate is not None:
            answer.update(
                cost=estimate.cost, input=estimate.input, provider_answer=estimate.provider_answer
            )
        return answer
