"""A LiteLLM ``general_settings.custom_auth`` for the proxy tests: API keys limited to model groups, no database.

LiteLLM's virtual keys (``/key/generate``) need its PostgreSQL database; this stands in for them:
``sk-smart-only`` may call the ``smart`` group only (LiteLLM's own model-access check enforces it,
with ``custom_auth_run_common_checks: true``), the master key may call everything.
"""

from __future__ import annotations

import os

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

#: Keys and the model groups they may call.
LIMITED_KEYS = {"sk-smart-only": ["smart"]}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key == os.environ.get("LITELLM_MASTER_KEY"):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN, user_id="admin")
    if api_key in LIMITED_KEYS:
        return UserAPIKeyAuth(api_key=api_key, models=LIMITED_KEYS[api_key], user_id=f"user-{api_key}")
    raise HTTPException(status_code=401, detail={"error": "invalid key"})
