"""PromptedModel: a frozen backbone + one prompt method + one head per task, routed by task name.

One class for every supported backbone, head and method; the method decides what trains:
- ``ptv2``: deep prompts (key/value prefixes at every layer) + heads; backbone frozen.
- ``prefix_tuning``: the same prefixes produced by an MLP during training (Li & Liang), folded
  into plain prefixes when saved, so its artifact and ONNX path are P-Tuning v2's.
- ``prompt_tuning``: k virtual-token embeddings at the input layer only (Lester et al.).
- ``ptuning_v1``: input-layer virtual tokens from a prompt encoder, with optional anchor words.
- ``lora`` / ``adalora``: low-rank adapters through peft; ``finetune``: everything trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from ptv2.model.heads import Head, pool
from ptv2.model.inject import encode, encode_with_input_prompt, query_means, token_key_values
from ptv2.model.input_prompts import VIRTUAL, InputPrompt, PromptEncoderPrompt
from ptv2.model.prompts import DeepPrompt, TaskFactors
from ptv2.model.spec import ModelSpec

DEEP, INPUT, ADAPTERS = ("ptv2", "prefix_tuning"), ("prompt_tuning", "ptuning_v1"), ("lora", "adalora")
METHODS = DEEP + INPUT + ADAPTERS + ("finetune",)


@dataclass(frozen=True)
class MethodInputs:
    """What a method needs besides the spec, resolved outside the model (no tokenizer here):
    the seed of its random init, the optimizer's step count (AdaLoRA's rank schedule), and token ids
    (Prompt Tuning's init words, P-Tuning v1's anchor words)."""

    seed: int
    total_steps: int
    init_ids: list[int] = field(default_factory=list)
    anchor_ids: dict[str, list[int]] = field(default_factory=dict)
    # deep prompts started from real tokens: a tokenized text (special tokens included) and its positions to copy
    kv_context: list[int] = field(default_factory=list)
    kv_positions: list[int] = field(default_factory=list)
    # prompt.init quiet: token ids of sample training texts (B, T) with their mask (margin: spec.prompt)
    quiet_ids: list[list[int]] = field(default_factory=list)
    quiet_mask: list[list[int]] = field(default_factory=list)


def ptuning_template(spec: ModelSpec) -> list[str]:
    """P-Tuning v1's slots: the configured template, or ``prompt_length`` virtual tokens."""
    return (spec.prompt.template or " ".join([VIRTUAL] * spec.prompt.length)).split()


class PromptedModel(nn.Module):
    def __init__(self, backbone: PreTrainedModel, spec: ModelSpec, inputs: MethodInputs) -> None:
        """Every setting comes from ``spec`` (one head per ``spec.tasks`` entry); ``inputs`` are the
        run-time values a method's initialisation needs."""
        super().__init__()
        method = spec.method
        if method not in METHODS:
            raise ValueError(f"method {method!r}: expected one of {list(METHODS)}")
        self.spec, self.method, self.pooling = spec, method, spec.pooling
        backbone.requires_grad_(method == "finetune")
        c = backbone.config
        self.prompt: DeepPrompt | None = None
        self.input_prompt: nn.Module | None = None
        p = spec.prompt
        if method in DEEP:
            self.prompt = DeepPrompt(c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
                                     p.length, p.reparam or method == "prefix_tuning", p.reparam_hidden, p.dropout)
            if inputs.kv_positions and not self.prompt.reparam and p.length:
                kv = token_key_values(backbone, torch.tensor([inputs.kv_context]))
                self.prompt.start_from(kv, inputs.kv_positions, torch.Generator().manual_seed(inputs.seed))
            elif inputs.quiet_ids and not self.prompt.reparam and p.length:
                q = query_means(backbone, torch.tensor(inputs.quiet_ids), torch.tensor(inputs.quiet_mask))
                self.prompt.start_quiet(q, p.quiet_margin, torch.Generator().manual_seed(inputs.seed))
        elif method == "prompt_tuning":
            self.input_prompt = InputPrompt(p.length, backbone.get_input_embeddings(), p.init,
                                            inputs.init_ids, torch.Generator().manual_seed(inputs.seed))
        elif method == "ptuning_v1":
            self.input_prompt = PromptEncoderPrompt(ptuning_template(spec), inputs.anchor_ids,
                                                    backbone.get_input_embeddings(), p.encoder, p.reparam_hidden)
        elif method in ADAPTERS:
            from ptv2.model.lora import wrap

            backbone = wrap(backbone, method, p.lora_r, p.lora_alpha, p.lora_dropout, list(p.lora_targets),
                            inputs.total_steps)
        self.task_factors: TaskFactors | None = None
        if spec.task_rank:
            if self.prompt is None or self.prompt.reparam:
                raise ValueError(f"task_rank needs plain deep prompts (method ptv2, no reparam), not {method!r}")
            self.task_factors = TaskFactors(list(spec.tasks), p.length, self.prompt.prefix.shape[1],
                                            spec.task_rank)
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: Head(c.hidden_size, h.type, h.n_out, spec.head_dropout,
                                                      h.pair_encoding)
                                    for name, h in spec.tasks.items()})
        self.task_types = {name: h.type for name, h in spec.tasks.items()}

    def train(self, mode: bool = True) -> "PromptedModel":
        super().train(mode)
        if self.method not in ("finetune",) + ADAPTERS:
            self.backbone.eval()  # frozen backbone: its dropout stays off
        return self

    def trainable_state(self, fold: bool = True) -> dict[str, torch.Tensor]:
        """What an artifact stores: the parameters this method trains (prefix MLP folded when ``fold``)."""
        # heads always: a bi regression head's affine map is fitted, not trained by gradient
        names = {n for n, p in self.named_parameters() if p.requires_grad or n.startswith("heads.")}
        state = {k: v for k, v in self.state_dict().items() if k in names}
        if fold and self.method == "prefix_tuning":
            state = {k: v for k, v in state.items() if not k.startswith("prompt.")}
            state["prompt.prefix"] = self.prompt.flat().detach()
        return state

    def merged(self) -> "PromptedModel":
        """For export: a copy with (Ada)LoRA folded into the backbone weights (W + BA), so the graph is a
        plain backbone + heads. Other methods return ``self`` (nothing to fold)."""
        if self.method not in ADAPTERS or not hasattr(self.backbone, "merge_and_unload"):
            return self  # nothing to fold, or folded already
        import copy

        out = copy.deepcopy(self)
        out.backbone = out.backbone.merge_and_unload()  # peft: adds the scaled low-rank deltas in place
        return out.eval()

    def task_prompt(self, task: str | None = None) -> torch.Tensor:
        """(P, L*2*H*D) plain prefixes for ``task``: the shared prompt, times the task's factor if any."""
        flat = self.prompt.flat()
        if self.task_factors is not None and task is not None:
            flat = flat * self.task_factors(task)
        return flat

    def hidden(self, batch: dict[str, torch.Tensor], task: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, h) hidden states of the real tokens, and the pooler output (B, h) if any. Rows of very different
        lengths (``length_groups``) run as two trimmed groups; then positions past a group's longest row are 0."""
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        if self.input_prompt is not None:
            return encode_with_input_prompt(self.backbone, ids, mask, types, self.input_prompt(ids.shape[0]))
        scale = self.task_factors(task) if self.task_factors is not None and task is not None else None

        def prefix(n: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:  # per layer (K, V), each (n, H, P, D)
            return self.prompt(n, scale) if self.prompt is not None else None

        groups = None if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() else length_groups(mask)
        if groups is None:  # (a traced graph must not depend on the batch's lengths)
            return encode(self.backbone, ids, mask, types, prefix(ids.shape[0]))
        parts = []
        for idx, t in groups:  # each group trimmed to its longest row; padded positions of the result are 0
            h, p = encode(self.backbone, ids[idx, :t], mask[idx, :t], None if types is None else types[idx, :t],
                          prefix(len(idx)))
            parts.append((idx, nn.functional.pad(h, (0, 0, 0, ids.shape[1] - t)), p))
        back = torch.cat([idx for idx, _, _ in parts]).argsort()  # each input row's place in the groups
        pooled = None if parts[0][2] is None else torch.cat([p for _, _, p in parts])[back]
        return torch.cat([h for _, h, _ in parts])[back], pooled

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """batch: input_ids/attention_mask/token_type_ids (N, T), N = B or B*C. Returns logits:
        (B, n_labels), (B,) regression, (B, C) multiple choice, (B, T, n_labels) tokens."""
        if task not in self.heads:
            raise KeyError(f"task {task!r} has no head; heads: {sorted(self.heads)}")
        hidden, pooled = self.hidden(batch, task)
        return self.apply_head(task, hidden, batch, pooled)

    def loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor, cosent_scale: float) -> torch.Tensor:
        """The training loss of ``task``'s head on its ``forward`` output."""
        return self.heads[task].loss(logits, labels, cosent_scale)

    def apply_head(self, task: str, hidden: torch.Tensor, batch: dict[str, torch.Tensor],
                   pooled: torch.Tensor | None = None) -> torch.Tensor:
        head = self.heads[task]
        if head.kind == "token":
            return head(hidden)
        n_choices = int(batch["n_choices"]) if "n_choices" in batch else 0
        return head(pool(hidden, batch["attention_mask"], self.pooling, pooled, self.spec.normalize), n_choices)


def length_groups(mask: torch.Tensor, min_rows: int = 8,
                  min_saving: float = 0.25) -> list[tuple[torch.Tensor, int]] | None:
    """(N, T) attention mask -> [(row indices, their longest row), ...] for the shorter and the longer rows, when
    encoding the two groups apart, each trimmed to its own longest row, saves ``min_saving`` of the padded
    tokens; else None. The case: bi-encoded pairs, a premise and its hypothesis in one batch (RTE, CB: ~65 vs
    ~12 tokens), every hypothesis padded to the longest premise. Rows of a length-grouped batch stay together."""
    N, T = mask.shape
    if N < min_rows:
        return None
    ext = T - mask.flip(1).argmax(1)  # (N,) one past each row's last real token (T for an all-pad row)
    order = ext.argsort()
    s = ext[order]
    k = torch.arange(1, N, device=mask.device)
    cost = k * s[:-1] + (N - k) * s[-1]  # rows [0, k) padded to s[k - 1], the others to the longest
    best = int(cost.argmin())
    if float(cost[best]) > (1 - min_saving) * N * T:
        return None
    return [(order[: best + 1], int(s[best])), (order[best + 1:], int(s[-1]))]


def count_parameters(model: PromptedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts during training (Prefix-Tuning counts its MLP)."""
    trainable = sum(v.numel() for v in model.trainable_state(fold=False).values())
    base = model.backbone.get_base_model() if hasattr(model.backbone, "get_base_model") else model.backbone
    total = sum(p.numel() for p in base.parameters()) + sum(
        v.numel() for k, v in model.trainable_state(fold=False).items() if not k.startswith("backbone."))
    return trainable, total
