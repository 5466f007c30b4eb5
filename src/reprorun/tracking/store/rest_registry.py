"""The model registry over MLflow's REST API (``registered-models/*``, ``model-versions/*``):
``RestStore``'s registry part, for reprorun's server or any MLflow tracking server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reprorun.tracking.entities import Page
from reprorun.tracking.registry_entities import STAGE_NONE, ModelVersion, RegisteredModel


class RestRegistry:
    """Needs the REST store's ``_get`` and ``_post``."""

    def _get(self, path: str, **query: Any) -> dict[str, Any]:
        raise NotImplementedError  # RestStore's

    def _post(self, path: str, body: Mapping[str, Any], method: str = "POST") -> dict[str, Any]:
        raise NotImplementedError  # RestStore's

    # --- registered models -----------------------------------------------------------------

    def create_registered_model(
        self,
        name: str,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> RegisteredModel:
        body: dict[str, Any] = {"name": name, "tags": _kv(tags or {})}
        if description is not None:
            body["description"] = description
        return registered_model(self._post("/registered-models/create", body)["registered_model"])

    def get_registered_model(self, name: str) -> RegisteredModel:
        return registered_model(self._get("/registered-models/get", name=name)["registered_model"])

    def update_registered_model(self, name: str, description: str | None) -> RegisteredModel:
        found = self._post(
            "/registered-models/update", {"name": name, "description": description}, "PATCH"
        )
        return registered_model(found["registered_model"])

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        found = self._post("/registered-models/rename", {"name": name, "new_name": new_name})
        return registered_model(found["registered_model"])

    def delete_registered_model(self, name: str) -> None:
        self._post("/registered-models/delete", {"name": name}, "DELETE")

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        found = self._get(
            "/registered-models/search",
            filter=filter_string or None,
            max_results=max_results,
            order_by=list(order_by or ()) or None,
            page_token=page_token or None,
        )
        return Page(
            [registered_model(m) for m in found.get("registered_models") or []],
            found.get("next_page_token") or None,
        )

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._post("/registered-models/set-tag", {"name": name, "key": key, "value": value})

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._post("/registered-models/delete-tag", {"name": name, "key": key}, "DELETE")

    def set_registered_model_alias(self, name: str, alias: str, version: str | int) -> None:
        self._post(
            "/registered-models/alias", {"name": name, "alias": alias, "version": str(version)}
        )

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._post("/registered-models/alias", {"name": name, "alias": alias}, "DELETE")

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        found = self._get("/registered-models/alias", name=name, alias=alias)
        return model_version(found["model_version"])

    # --- versions ----------------------------------------------------------------------------

    def get_latest_versions(
        self, name: str, stages: Sequence[str] | None = None
    ) -> list[ModelVersion]:
        found = self._post(
            "/registered-models/get-latest-versions", {"name": name, "stages": list(stages or ())}
        )
        return [model_version(v) for v in found.get("model_versions") or []]

    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_link: str | None = None,
        description: str | None = None,
        model_id: str | None = None,
        *,
        user_id: str | None = None,
        storage_location: str | None = None,
    ) -> ModelVersion:
        """``user_id`` and ``storage_location`` are the server's to decide."""
        body: dict[str, Any] = {"name": name, "source": source, "tags": _kv(tags or {})}
        for key, value in (
            ("run_id", run_id),
            ("run_link", run_link),
            ("description", description),
            ("model_id", model_id),
        ):
            if value:
                body[key] = value
        return model_version(self._post("/model-versions/create", body)["model_version"])

    def get_model_version(self, name: str, version: str | int) -> ModelVersion:
        found = self._get("/model-versions/get", name=name, version=str(version))
        return model_version(found["model_version"])

    def update_model_version(
        self, name: str, version: str | int, description: str | None
    ) -> ModelVersion:
        found = self._post(
            "/model-versions/update",
            {"name": name, "version": str(version), "description": description},
            "PATCH",
        )
        return model_version(found["model_version"])

    def transition_model_version_stage(
        self, name: str, version: str | int, stage: str, archive_existing_versions: bool = False
    ) -> ModelVersion:
        found = self._post(
            "/model-versions/transition-stage",
            {
                "name": name,
                "version": str(version),
                "stage": stage,
                "archive_existing_versions": archive_existing_versions,
            },
        )
        return model_version(found["model_version"])

    def delete_model_version(self, name: str, version: str | int) -> None:
        self._post("/model-versions/delete", {"name": name, "version": str(version)}, "DELETE")

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 10_000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        found = self._get(
            "/model-versions/search",
            filter=filter_string or None,
            max_results=max_results,
            order_by=list(order_by or ()) or None,
            page_token=page_token or None,
        )
        return Page(
            [model_version(v) for v in found.get("model_versions") or []],
            found.get("next_page_token") or None,
        )

    def set_model_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        self._post(
            "/model-versions/set-tag",
            {"name": name, "version": str(version), "key": key, "value": value},
        )

    def delete_model_version_tag(self, name: str, version: str | int, key: str) -> None:
        self._post(
            "/model-versions/delete-tag",
            {"name": name, "version": str(version), "key": key},
            "DELETE",
        )

    def get_model_version_download_uri(self, name: str, version: str | int) -> str:
        found = self._get("/model-versions/get-download-uri", name=name, version=str(version))
        return str(found.get("artifact_uri", ""))


def _kv(items: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in items.items()]


def _pairs(items: Any) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in items or []}


def model_version(v: Mapping[str, Any]) -> ModelVersion:
    """A ``ModelVersion`` from MLflow's JSON."""
    return ModelVersion(
        name=v.get("name", ""),
        version=int(v.get("version", 0)),
        creation_timestamp=int(v.get("creation_timestamp", 0)),
        last_updated_timestamp=int(v.get("last_updated_timestamp", 0)),
        source=v.get("source", ""),
        current_stage=v.get("current_stage") or STAGE_NONE,
        description=v.get("description") or None,
        user_id=v.get("user_id") or None,
        run_id=v.get("run_id") or None,
        run_link=v.get("run_link") or None,
        status=v.get("status") or "READY",
        status_message=v.get("status_message") or None,
        model_id=v.get("model_id") or None,
        tags=_pairs(v.get("tags")),
        aliases=list(v.get("aliases") or []),
    )


def registered_model(m: Mapping[str, Any]) -> RegisteredModel:
    """A ``RegisteredModel`` from MLflow's JSON."""
    return RegisteredModel(
        name=m.get("name", ""),
        creation_timestamp=int(m.get("creation_timestamp", 0)),
        last_updated_timestamp=int(m.get("last_updated_timestamp", 0)),
        description=m.get("description") or None,
        tags=_pairs(m.get("tags")),
        aliases={a["alias"]: int(a.get("version", 0)) for a in m.get("aliases") or []},
        latest_versions=[model_version(v) for v in m.get("latest_versions") or []],
    )
