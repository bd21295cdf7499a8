"""oauthenticator's classes on Courtyard's OAuth login: a subclass's hooks, options it lacks."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ..auth.base import Authenticator, LoginRefused, maybe_await
from ..errors import ConfigError
from .auth import class_path, plugin_instance, tornado_http_error
from .auth_objects import LoginHandler, hub_user

if TYPE_CHECKING:
    from jupyterhub.auth import Authenticator as JupyterHubBase
    from sqlalchemy.orm import Session

    from ..auth.login import AuthenticatorHub, LoginContext
    from ..auth.oauth import OAuthenticator

    # what OAuthSubclassHooks is mixed into (before it in the MRO): Courtyard's OAuth login
    _OAuthLogin = OAuthenticator
else:
    _OAuthLogin = object

#: the module the classes made for a configured class are named in (``/hub/api/info``)
ADAPTER_MODULE = "courtyard.compat.auth"


# -- subclasses of oauthenticator's classes: their hooks on top of the mapped login ------------
# the hooks Courtyard's OAuth login calls, and when; any other method of oauthenticator's that
# a subclass overrides would be silently skipped, so it is refused at start
OAUTH_HOOKS = frozenset({"authenticate", "check_allowed", "check_blocked_users",
                         "user_info_to_username", "update_auth_model", "pre_spawn_start",
                         "post_spawn_stop", "normalize_username", "logout_url"})
# what oauthenticator's own ``authenticate`` (reached by a subclass's ``super()``) would fetch
# from the provider: the token and claims Courtyard's login already fetched and verified
_SIGN_IN: contextvars.ContextVar[tuple[dict[str, Any], dict[str, Any]]] = \
    contextvars.ContextVar("courtyard_oauth_sign_in")
OAUTH_TORNADO = frozenset({"get_handlers", "login_handler", "callback_handler",
                           "logout_handler", "login_url", "get_callback_url"})


def oauth_subclass(cls: type[JupyterHubBase], oauth: type,
                   mapped: type[Authenticator]) -> type[Authenticator]:
    """The Courtyard class for ``cls``, a subclass of oauthenticator's ``oauth``: Courtyard's
    ``mapped`` login (same options, read from ``c.{cls.__name__}`` too), running the
    subclass's own hooks (:data:`OAUTH_HOOKS`) on one instance of it. ConfigError, naming
    the method, for an override Courtyard cannot call."""
    own = cls.__mro__[:cls.__mro__.index(oauth)]
    overridden = sorted({name for k in own for name, value in vars(k).items()
                         if not name.startswith("_") and hasattr(oauth, name)
                         and callable(getattr(oauth, name)) and callable(value)})
    for name in overridden:
        if name in OAUTH_TORNADO:
            raise ConfigError(f"authenticator_class = {class_path(cls)}: it overrides {name}, "
                              "which serves or routes tornado pages; Courtyard's OAuth login "
                              "serves its own, so this cannot run here")
        if name not in OAUTH_HOOKS:
            raise ConfigError(
                f"authenticator_class = {class_path(cls)}: it overrides {name}, which "
                "Courtyard's OAuth login never calls (it does the OAuth flow itself); only "
                f"{', '.join(sorted(OAUTH_HOOKS))} can be overridden")
    if asyncio.iscoroutinefunction(cls.user_info_to_username):
        raise ConfigError(f"{cls.__name__}.user_info_to_username is async; it must be a plain "
                          "(sync) method, as oauthenticator calls it")
    # options the subclass sets in its body (``login_service = "Campus SSO"``, a trait with
    # another default) hold for Courtyard's login too
    values = {name: value for k in reversed(own) for name, value in vars(k).items()
              if not name.startswith("_") and not callable(value) and hasattr(mapped, name)
              and mapped.class_traits().get(name) is not None}
    hooked = type(cls.__name__, (OAuthSubclassHooks, mapped),
                  {**values, "wrapped_class": cls, "hooks": frozenset(overridden),
                   "__module__": ADAPTER_MODULE})
    return cast(type[Authenticator], hooked)  # a subclass of ``mapped``, made here


class OAuthSubclassHooks(_OAuthLogin):
    """Mixed in before a Courtyard OAuth class: the overrides of an oauthenticator subclass,
    called with oauthenticator's auth model (``auth_state[user_auth_state_key]`` holds what
    the provider said), awaited when async. A hook that raises refuses the sign-in."""

    wrapped_class: ClassVar[type]
    hooks: ClassVar[frozenset[str]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = plugin_instance(self.wrapped_class, self.config)
        if "authenticate" in self.hooks:
            self._feed_inner()

    def _feed_inner(self) -> None:
        """Point the calls oauthenticator's ``authenticate`` makes to the provider at what
        this sign-in (its context) already has, so ``super().authenticate`` in the subclass
        runs oauthenticator's own steps without a second exchange of the one-time code."""

        async def get_token_info(handler: Any, params: Any) -> dict[str, Any]:
            return _SIGN_IN.get()[0]

        async def token_to_user(token_info: Any) -> dict[str, Any]:
            return _SIGN_IN.get()[1]

        self.inner.build_access_tokens_request_params = lambda handler, data=None: {}
        self.inner.get_token_info = get_token_info
        self.inner.token_to_user = token_to_user

    def component_classes(self) -> list[type]:
        return [*super().component_classes(), type(self.inner)]

    def startup(self, hub: AuthenticatorHub, db: Session) -> None:
        """A ``logout_url`` override pointing away from the hub's logout page (a provider's
        end-session page) is where the browser goes once the hub has signed it out."""
        super().startup(hub, db)
        if "logout_url" in self.hooks:
            hub_prefix = f"{hub.options.base_url}hub/"
            url = self.inner.logout_url(hub_prefix)
            if url and url.rstrip("/") != f"{hub_prefix}logout":
                self.logout_redirect_url = url

    def _theirs(self, name: str, model: dict[str, Any] | None) -> dict[str, Any] | None:
        """The model as oauthenticator's hooks read it (``admin`` always present)."""
        if model is None:
            return None
        admin = model.get("admin")
        return {**model, "admin": bool(admin) or name in self.admin_users}

    def username_from_claims(self, claims: dict[str, Any]) -> object:
        if "user_info_to_username" in self.hooks:
            return self.inner.user_info_to_username(claims)
        return super().username_from_claims(claims)

    async def _call(self, value: Any) -> Any:
        """A hook's result, awaited; its tornado ``HTTPError`` 4xx (oauthenticator's way to
        refuse with a message) refuses the sign-in with that status and message."""
        try:
            return await maybe_await(value)
        except tornado_http_error() as e:
            if e.status_code >= 500:
                raise
            raise LoginRefused(e.log_message or e.reason or "You may not sign in here.",
                               e.status_code) from None

    async def authenticate(self, handler: LoginContext, data: dict[str, Any]) -> dict[str, Any] | None:
        model = await super().authenticate(handler, data)
        if model is None:
            return None
        if "authenticate" in self.hooks:
            return await self._their_authenticate(handler, data, model)
        if "update_auth_model" not in self.hooks:
            return model
        updated: dict[str, Any] | None = await self._call(
            self.inner.update_auth_model(self._theirs(model["name"], model)))
        return updated

    async def _their_authenticate(self, handler: LoginContext, data: dict[str, Any],
                                  model: dict[str, Any]) -> dict[str, Any] | None:
        """The subclass's ``authenticate`` on the verified sign-in; what it returns is
        merged over Courtyard's model (its ``auth_state`` keys over Courtyard's)."""
        state = model["auth_state"]
        token = {**state.get("token_response", {}), "access_token": state["access_token"],
                 "scope": " ".join(state.get("scope") or [])}
        token.update({k: state[k] for k in ("refresh_token", "id_token") if state.get(k)})
        _SIGN_IN.set((token, state.get("oauth_user", {})))
        jh = LoginHandler(handler if hasattr(handler, "request") else None, self.started_hub,
                          self.inner, data)
        theirs = await self._call(self.inner.authenticate(jh, data))
        if theirs is None:
            return None
        theirs = {"name": theirs} if isinstance(theirs, str) else dict(theirs)
        merged = {**model, **{k: v for k, v in theirs.items()
                              if k != "auth_state" and not (k == "admin" and v is None)}}
        merged["auth_state"] = {**state, **(theirs.get("auth_state") or {})}
        return merged

    def normalize_username(self, username: str) -> str:
        if "normalize_username" in self.hooks:
            name: str = self.inner.normalize_username(username)
            return name
        return super().normalize_username(username)

    # async where the built-in is sync, as JupyterHub lets these hooks be: the hub awaits
    # either (maybe_await), which a sync base method's type cannot say
    async def check_blocked_users(  # type: ignore[override]
            self, username: str, model: dict[str, Any] | None = None) -> bool:
        if "check_blocked_users" in self.hooks:
            return bool(await self._call(self.inner.check_blocked_users(
                username, self._theirs(username, model))))
        return bool(await maybe_await(super().check_blocked_users(username, model)))

    async def check_allowed(  # type: ignore[override]
            self, username: str, model: dict[str, Any] | None = None) -> bool:
        if "check_allowed" in self.hooks:
            return bool(await self._call(self.inner.check_allowed(
                username, self._theirs(username, model))))
        return bool(await maybe_await(super().check_allowed(username, model)))

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        await maybe_await(super().pre_spawn_start(user, spawner))
        if "pre_spawn_start" in self.hooks:
            jh_user = hub_user(self.hub, user)
            await maybe_await(self.inner.pre_spawn_start(jh_user, spawner))

    async def post_spawn_stop(self, user: Any, spawner: Any) -> None:
        await maybe_await(super().post_spawn_stop(user, spawner))
        if "post_spawn_stop" in self.hooks:
            jh_user = hub_user(self.hub, user)
            await maybe_await(self.inner.post_spawn_stop(jh_user, spawner))


# -- oauthenticator's classes on Courtyard's OAuth login -----------------------------------------
# oauthenticator options with another name here (the hint says which), or harmless to drop
OAUTH_RENAMED = {"tls_verify": "validate_server_cert", "username_key": "username_claim",
                 "whitelist": "allowed_users"}
OAUTH_HARMLESS = {"any_allow_config"}  # only silences a start-up warning in JupyterHub


# oauthenticator 17's GenericOAuthenticator options that Courtyard's lacks, for when the
# package is not installed (a config naming the classes by string)
OAUTH_KNOWN = {"allowed_scopes", "auth_refresh_strict", "auth_state_groups_key",
               "auto_login_oauth2_authorize", "custom_403_message", "extra_params",
               "http_request_kwargs", "modify_auth_state_hook", "otp_prompt",
               "reconcile_auth_state_hook", "refresh_pre_stop", "refresh_user_hook", "request_otp",
               "reset_managed_roles_on_startup", "tls_verify", "token_params",
               "userdata_from_id_token", "userdata_params", "username_key", "whitelist"}
OAUTH_MODULES = {"GenericOAuthenticator": "generic", "GitHubOAuthenticator": "github",
                 "GitLabOAuthenticator": "gitlab", "GoogleOAuthenticator": "google",
                 "AzureAdOAuthenticator": "azuread"}


def oauthenticator_options(courtyard_cls: type) -> set[str]:
    """oauthenticator's options for the class of the same name as ``courtyard_cls`` (from
    the installed package, else :data:`OAUTH_KNOWN`)."""
    import importlib

    module = OAUTH_MODULES.get(courtyard_cls.__name__, "generic")
    try:
        theirs = getattr(importlib.import_module(f"oauthenticator.{module}"),
                         courtyard_cls.__name__, None)
    except ImportError:
        theirs = None
    return set(theirs.class_trait_names(config=True)) if theirs is not None else set(OAUTH_KNOWN)


def check_oauthenticator_options(authenticator: Authenticator) -> None:
    """Refuse, with one line, an oauthenticator option set in the config that Courtyard's
    OAuth login would otherwise drop: an allow rule silently ignored is a hole or a lock-out.
    oauthenticator is imported only when the config sets an option Courtyard lacks."""
    cls = type(authenticator)
    ours = set(cls.class_trait_names(config=True))
    sections = [k.__name__ for k in cls.__mro__ if k.__name__ in authenticator.config]
    extra = [(s, key) for s in sections for key in sorted(authenticator.config[s])
             if key not in ours and key not in OAUTH_HARMLESS]
    if not extra:
        return
    theirs = oauthenticator_options(cls)
    for section, key in extra:
        if key not in theirs:
            continue  # not oauthenticator's: the unknown-option warning names it
        hint = (f"use c.{section}.{OAUTH_RENAMED[key]}" if key in OAUTH_RENAMED
                else "remove it, or choose an authenticator that implements it")
        raise ConfigError(f"c.{section}.{key} (an oauthenticator option) is not supported by "
                          f"Courtyard's {cls.__name__}; {hint}")
