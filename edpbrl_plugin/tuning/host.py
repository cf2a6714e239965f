"""What hosts do around an update that training must undo: ComfyUI runs every node under ``torch.inference_mode()``
and may load weights there; an update steps out of both."""

from __future__ import annotations

import functools

import torch


def with_autograd(method):
    """Run ``method`` with autograd on. Hosts may call us under ``torch.inference_mode()`` (ComfyUI runs
    every node inside it) or ``torch.no_grad()``; training needs neither."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return method(*args, **kwargs)

    return wrapper


def release_inference_tensors(module: torch.nn.Module) -> None:
    """Replace parameters and buffers created under inference mode (a pipeline loaded inside a ComfyUI node)
    by normal copies: autograd cannot save inference tensors for the backward pass. A no-op once released."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.is_inference():
                sub._parameters[name] = torch.nn.Parameter(param.clone(), requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.is_inference():
                sub._buffers[name] = buffer.clone()
