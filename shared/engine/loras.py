"""LoRAs from <models_dir>/Lora: `<lora:name:weight>` prompt tags, applied for one call only.

A1111 tag forms: `<lora:name>`, `<lora:name:w>` (text encoder and UNet), `<lora:name:te:unet>`,
and named `te=` / `unet=`; `<lyco:...>` is the same network type. Files load through diffusers'
`load_lora_weights` (kohya, A1111 and diffusers/PEFT layouts), get their weights with
`set_adapters`, and are unloaded when the call ends, so the warm model is unchanged afterwards.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

from shared.engine.registry import LORA_DIR
from shared.errors import InvalidRequest, NotFound, Unsupported
from shared.generation import LoraRef

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
LORA_KINDS = ("lora", "lyco")


class _AdapterReportFilter(logging.Filter):
    """transformers logs every base weight as MISSING when only an adapter loads: noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


logging.getLogger("transformers.integrations.peft").addFilter(_AdapterReportFilter())


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(f"bad LoRA multiplier {text!r} in {tag}", param="prompt") from None


def refs_from_tags(networks: list[tuple[str, list[str]]]) -> list[LoraRef]:
    """LoraRefs from extract_networks' tags; other network kinds (hypernet, ...) are refused."""
    refs = []
    for kind, args in networks:
        tag = f"<{kind}:{':'.join(args)}>"
        if kind not in LORA_KINDS:
            raise Unsupported(f"extra network {tag} is not supported; only <lora:...> tags are",
                              param="prompt")
        named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
        positional = [a for a in args[1:] if "=" not in a]
        te = _number(named.get("te", positional[0] if positional else "1"), tag)
        unet = named.get("unet", positional[1] if len(positional) > 1 else None)
        refs.append(LoraRef(name=args[0], weight=te,
                            unet_weight=None if unet is None else _number(unet, tag)))
    return refs


def resolve(registry, refs: list[LoraRef]) -> list[tuple[LoraRef, Path]]:
    """Each reference with its file; an unknown name fails before any model is loaded."""
    if not refs:
        return []
    files = registry.extra_files(LORA_DIR, LORA_SUFFIXES)
    lower = {k.lower(): v for k, v in files.items()}
    out = []
    for ref in refs:
        path = files.get(ref.name) or lower.get(ref.name.lower())
        if path is None:
            raise NotFound(f"LoRA not found: {ref.name!r}; available: "
                               f"{', '.join(files) or 'none'}", param="lora")
        out.append((ref, path))
    return out


def _weights(pipe, adapter: str, ref: LoraRef) -> dict:
    """Per-component weights for set_adapters, for the components this adapter touches."""
    unet = ref.weight if ref.unet_weight is None else ref.unet_weight
    parts = [c for c, names in pipe.get_list_adapters().items() if adapter in names]
    return {c: (ref.weight if c.startswith("text_encoder") else unet) for c in parts}


@contextmanager
def applied(pipe, loras: list[tuple[LoraRef, Path]]):
    """Load the LoRAs into the pipeline's modules for the duration of the block."""
    if not loras:
        yield
        return
    names = []
    try:
        for i, (ref, path) in enumerate(loras):
            name = f"sdgate_{i}"
            try:
                with warnings.catch_warnings():  # "multiple adapters" is what we want here
                    warnings.filterwarnings("ignore", "Already found a `peft_config`")
                    pipe.load_lora_weights(str(path.parent), weight_name=path.name,
                                           adapter_name=name)
            except (ValueError, KeyError, RuntimeError) as e:
                raise InvalidRequest(f"LoRA {ref.name!r} does not fit this model: {e}",
                                     param="lora") from e
            if not any(name in n for n in pipe.get_list_adapters().values()):
                # diffusers only warns when no key matches a component (another family's LoRA)
                raise InvalidRequest(f"LoRA {ref.name!r} does not fit this model: none of its "
                                     "keys match its components (a LoRA for another model "
                                     "family?)", param="lora")
            names.append(name)
        pipe.set_adapters(names, [_weights(pipe, n, ref) for n, (ref, _) in zip(names, loras)])
        log.info("applied LoRAs %s", ", ".join(f"{r.name}:{r.weight}" for r, _ in loras))
        yield
    finally:
        # Removes the PEFT layers too: the model is exactly as before the call.
        pipe.unload_lora_weights()
