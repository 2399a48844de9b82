"""Tessera's configuration, read from the environment and `.env`.

One `Settings` object is built at start and passed down; nothing else reads the environment.
A bad value stops the start with one line naming the setting, the value and what is allowed,
because an operator reading a stack trace of pydantic internals is a bad first day.
The Discord token is a `SecretStr`, so it never appears in logs, errors or `repr`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from engine.prompt import PromptLimits
from engine.redact import redact_url
from engine.request import DraftProfile

DEFAULT_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# A Hugging Face repo id: "name" or "owner/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ConfigError(Exception):
    """Configuration that cannot be used; the message is one line for the operator."""


def looks_like_path(value: str) -> bool:
    """Whether a model reference is meant as a path rather than a hub id.

    diffusers takes a missing relative path for a hub id and retries the network, so we
    decide here, once, and insist that paths exist.
    """
    return (
        value.startswith(("/", "./", "../", "~"))
        or value.endswith(_SINGLE_FILE_SUFFIXES)
        or (os.sep in value.strip("/") and os.path.exists(value))
        or os.path.isdir(value)
    )


def validate_model_ref(value: str) -> str:
    """Check a model id, folder or single-file checkpoint path; return it normalised."""
    value = value.strip()
    if not value:
        raise ValueError("must be a Hugging Face model id like 'owner/name', a model folder or a .safetensors/.ckpt file")
    if looks_like_path(value):
        path = Path(value).expanduser()
        if not path.exists():
            raise ValueError(f"the path {str(path)!r} does not exist (give an absolute path to a model folder or a .safetensors/.ckpt file, or a hub id like 'owner/name')")
        return str(path.resolve())
    if not _HUB_ID.match(value):
        raise ValueError("is neither an existing path nor a Hugging Face model id like 'owner/name'")
    return value


class Settings(BaseSettings):
    """Every setting Tessera reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    discord_token: SecretStr | None = Field(default=None)
    dev_guild_id: int | None = None
    discord_api_base: str | None = None  # e.g. an HTTP proxy in front of https://discord.com/api/v10

    model_id: str = DEFAULT_MODEL_ID
    allowed_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    sampler: str = "euler_a"
    attention_slicing: bool = False
    vae_tiling: bool = True
    cpu_offload: bool = False
    safety_checker: bool = False
    safety_checker_model: str = "CompVis/stable-diffusion-safety-checker"

    # LoRAs and textual-inversion embeddings (.safetensors), and the --draft path.
    lora_dir: Path | None = None
    embeddings_dir: Path | None = None
    draft_lora: Path | None = None  # an LCM-LoRA for the model family (runs with the LCM sampler)
    draft_model_id: str = ""  # or a turbo/lightning checkpoint drawn with DRAFT_SAMPLER
    draft_steps: int = Field(default=4, ge=1, le=8)
    draft_guidance: float = Field(default=1.0, ge=0.0, le=3.0)
    draft_sampler: str = "lcm"
    # Edits (zoom out, pan, make square, vary region): an inpainting checkpoint (empty: MODEL_ID
    # paints them), the text-to-mask model of Vary (Region) "--where", and how large pans may grow.
    inpaint_model_id: str = ""
    segment_model_id: str = "CIDAS/clipseg-rd64-refined"
    pan_max_side: int = Field(default=2048, ge=256, le=4096)

    data_dir: Path = Path("data")
    upscaler_weights_dir: Path | None = None
    upscale_tile: int = Field(default=256, ge=0)
    upscale_tile_overlap: int = Field(default=16, ge=0)
    upscale_max_side: int = Field(default=4096, ge=256, le=8192)  # results over 8192² are refused (Redis results too)

    queue_url: str = ""
    queue_max_per_user: int = Field(default=10, ge=1)
    queue_max_running_per_user: int = Field(default=2, ge=1)
    queue_max_total: int = Field(default=200, ge=1)
    queue_batch_size: int = Field(default=4, ge=1)
    job_timeout_s: float = Field(default=600.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    metrics_port: int = Field(default=0, ge=0, le=65535)

    prompt_max_length: int = Field(default=6000, ge=1)
    prompt_max_jobs: int = Field(default=40, ge=1)
    prompt_max_images: int = Field(default=10, ge=0, le=20)
    image_prompt_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    image_fetch_timeout_s: float = Field(default=10.0, gt=0)
    # Decoded pixels: per image (prompts and uploads, checked on the header before decoding)
    # and for all of one prompt's images together.
    image_prompt_max_pixels: int = Field(default=40_000_000, ge=1)
    image_prompt_max_total_pixels: int = Field(default=200_000_000, ge=1)
    # Image links may only reach public addresses on these ports; the listed hosts may be private.
    image_fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    image_fetch_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 443])

    # Pictures as prompts (--sref, --cref, image links, /blend): IP-Adapter weights. Empty repo: off
    # (the flags are refused naming IP_ADAPTER_REPO). Paths are inside the repo (hub id or folder).
    ip_adapter_repo: str = ""
    ip_adapter_sd15: str = "models/ip-adapter_sd15.safetensors"
    ip_adapter_sd15_face: str = "models/ip-adapter-full-face_sd15.safetensors"
    ip_adapter_sdxl: str = "sdxl_models/ip-adapter_sdxl_vit-h.safetensors"
    ip_adapter_sdxl_face: str = "sdxl_models/ip-adapter-plus-face_sdxl_vit-h.safetensors"
    ip_adapter_image_encoder: str = "models/image_encoder"
    # /describe: a transformers image-to-text model (BLIP), hub id or folder. Empty: off.
    caption_model: str = ""

    gallery_channel_id: int | None = None
    # The web gallery (`bot.web`): off while WEB_PORT is 0; `tessera web` runs it alone.
    web_port: int = Field(default=0, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    web_base_url: str = ""  # the address people open (behind a proxy); empty: http://WEB_HOST:WEB_PORT
    web_trust_proxy: bool = False  # take the client address from X-Forwarded-For (only behind a proxy)
    web_all_servers: bool = True  # the all-servers view at /; off: only /g/<server> pages
    web_rate_per_s: float = Field(default=20.0, gt=0)  # requests per second per client address...
    web_rate_burst: int = Field(default=120, ge=1)  # ...with bursts this large (a page and its thumbnails)
    banned_words: Annotated[list[str], NoDecode] = Field(default_factory=list)

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("discord_token", "dev_guild_id", "gallery_channel_id", "upscaler_weights_dir", "lora_dir",
                     "embeddings_dir", "draft_lora", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("banned_words", "allowed_models", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("image_fetch_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @field_validator("image_fetch_ports", mode="before")
    @classmethod
    def _port_list(cls, value: object) -> object:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if not all(item.isascii() and item.isdigit() for item in items):
                raise ValueError("must be comma-separated port numbers like 80,443")
            return [int(item) for item in items]
        return value

    @field_validator("image_fetch_ports")
    @classmethod
    def _ports_in_range(cls, value: list[int]) -> list[int]:
        if not value or not all(1 <= port <= 65535 for port in value):
            raise ValueError("must be one or more port numbers from 1 to 65535, like 80,443")
        return value

    @field_validator("web_base_url", mode="before")
    @classmethod
    def _web_base(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().rstrip("/")
            if value and (not value.startswith(("https://", "http://")) or any(c.isspace() for c in value)):
                raise ValueError("must be empty or the gallery's public http(s):// address, like https://gallery.example.org")
        return value

    @field_validator("discord_api_base", mode="before")
    @classmethod
    def _api_base(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not value.startswith(("https://", "http://")):
                raise ValueError("must be empty (Discord's own API) or an http(s):// URL like https://discord.com/api/v10")
        return value

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, value: str) -> str:
        return validate_model_ref(value)

    @field_validator("inpaint_model_id", "segment_model_id")
    @classmethod
    def _optional_model_ref(cls, value: str) -> str:
        return validate_model_ref(value) if value.strip() else ""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.match(value):
            raise ValueError("must be one of auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be empty (in-process queue) or a Redis URL like redis://:password@host:6379/0")
        return value

    @property
    def prompt_limits(self) -> PromptLimits:
        """The parser's limits from PROMPT_MAX_*: one place, so the bot, its checks and
        `tessera parse` refuse exactly the same prompts."""
        return PromptLimits(max_length=self.prompt_max_length, max_jobs=self.prompt_max_jobs,
                            max_images=self.prompt_max_images)

    @property
    def draft_profile(self) -> DraftProfile | None:
        """--draft's few-step path, or None when neither DRAFT_LORA nor DRAFT_MODEL_ID is set."""
        if self.draft_lora is None and not self.draft_model_id.strip():
            return None
        return DraftProfile(steps=self.draft_steps, guidance=self.draft_guidance, sampler=self.draft_sampler,
                            model=self.draft_model_id.strip() or None)

    @property
    def weights_dir(self) -> Path:
        """Where Real-ESRGAN weights live: `UPSCALER_WEIGHTS_DIR`, else `DATA_DIR/weights`."""
        return self.upscaler_weights_dir or self.data_dir / "weights"

    @property
    def web_url(self) -> str | None:
        """Where people open the web gallery, or None while it is off (WEB_PORT 0 and no WEB_BASE_URL)."""
        if self.web_base_url:
            return self.web_base_url
        if not self.web_port:
            return None
        host = f"[{self.web_host}]" if ":" in self.web_host else self.web_host
        return f"http://{host}:{self.web_port}"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "tessera.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


def _describe(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]).upper() if error.get("loc") else "SETTINGS"
    value = error.get("input")
    if name == "DISCORD_TOKEN":
        shown = "<hidden>"
    elif name == "QUEUE_URL" and isinstance(value, str):
        shown = repr(redact_url(value))  # never print a Redis password, however it is written
    else:
        shown = repr(value)
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    return f"invalid setting {name}={shown}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Build `Settings` from the environment, `.env` and `overrides`.

    Raises `ConfigError` with one line per bad setting; the first line is the one shown.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors(include_url=False))) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
