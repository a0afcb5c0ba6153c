"""Built-in weighting ``adamerging``: merge weights per source and per layer, learned by
minimising the merged model's prediction entropy on unlabelled target text (AdaMerging, Yang et
al., ICLR 2024), started from another weighting's (default ``softmax`` over URIEL)."""

from __future__ import annotations

from dataclasses import replace

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.groups import GROUPINGS
from merginguriel_core.interfaces import SELECTION_OPTIONS, Weighting, WeightingRequest, WeightResult
from merginguriel_core.params import Param, resolve_params


def source_folders(name: str, request: WeightingRequest, locales) -> dict:
    """The local folder of each of ``locales``' models (hub ids fetched), or a one-line error."""
    from merginguriel_core.models import resolve_location

    missing = [locale for locale in locales if locale not in request.models]
    if missing:
        raise ConfigError(f"weighting {name!r} reads the source models, but none is known for {missing[0]}; "
                          f"give the models (--models DIR, --registry or --model)")
    return {locale: resolve_location(request.models[locale]) for locale in locales}


class AdaMergingWeighting(Weighting):
    name = "adamerging"
    description = ("Per-layer merge weights learned by minimising the merged model's entropy on unlabelled "
                   "target text, from another weighting's start (AdaMerging).")
    reference = "Yang et al., AdaMerging, ICLR 2024, https://arxiv.org/abs/2310.02575"
    needs_target_text = True
    reads = SELECTION_OPTIONS  # the start weighting's, which chooses the sources
    params = (
        Param("start", str, "softmax", "the weighting whose sources and weights the learning starts from"),
        Param("steps", int, 30, "Adam steps on the weights (0: the start weights)", minimum=0, maximum=100000),
        Param("learning_rate", float, 0.05, "Adam step size on the weights' logits", minimum=0.0, min_inclusive=False),
        Param("grouping", str, "layer", "which tensors share weights: layer (each block, the embeddings, the head), "
              "tensor (each tensor) or model (one set)", choices=GROUPINGS),
        Param("max_sentences", int, 200, "target sentences used at most (the text budget)", minimum=1),
        Param("batch_size", int, 16, "sentences per step", minimum=1),
        Param("max_length", int, 128, "tokens per sentence at most", minimum=2),
    )

    def options_read(self, target):
        return SELECTION_OPTIONS

    def compute(self, request: WeightingRequest) -> WeightResult:
        from merginguriel_core.adamerging import learn_group_weights
        from merginguriel_core.merge import resolve_device
        from merginguriel_core.plugins import get_registry
        from merginguriel_core.target_text import fingerprint, take, unknown_note

        params = request.params
        registry = get_registry()
        start = registry.get("weighting", params["start"])
        if start.needs_target_text or isinstance(start, AdaMergingWeighting):
            raise ConfigError(f"parameter start={params['start']} of weighting 'adamerging' must be a weighting that "
                              f"reads no target text (uriel, softmax, average, ...)")
        first = start.compute(replace(request, target_text=None,
                                      params=resolve_params(start.params, {}, f"weighting {start.name!r}")))
        locales = [locale for locale, _ in first.weights]
        total = sum(weight for _, weight in first.weights)
        initial = [weight / total for _, weight in first.weights]
        notes = list(first.notes)
        text = request.target_text.sentences(request.target)
        sentences, note = take(text, params["max_sentences"])
        notes += [note] if note else []
        if len(locales) < 2:
            notes.append(f"only one source ({locales[0]}); nothing to learn")
        folders = source_folders(self.name, request, locales)
        run = learn_group_weights([(locale, folders[locale]) for locale in locales], initial, sentences,
                                  grouping=params["grouping"], steps=params["steps"] if len(locales) > 1 else 0,
                                  learning_rate=params["learning_rate"], batch_size=params["batch_size"],
                                  max_length=params["max_length"], device=resolve_device(request.device))
        warning = unknown_note(run.unknown_share, request.target)
        notes += [warning] if warning else []
        groups = run.group_weights if run.group_weights.groups else None
        if groups is None:
            notes.append("the sources agree on every tensor; the start weights are kept")
        else:
            notes.append(f"adamerging: mean entropy {run.entropy_before:.4f} -> {run.entropy_after:.4f} on "
                         f"{len(sentences)} sentences, {len(run.entropies)} steps of {run.seconds_per_step:.2f} s, "
                         f"{len(groups.groups)} {params['grouping']} groups")
        selected = groups.mean() if groups is not None else list(zip(locales, initial))
        selected = sorted(selected, key=lambda item: (-item[1], item[0]))
        details = {"start": start.name, "start_weights": dict(zip(locales, initial)),
                   "start_details": first.details, "target_text": {**request.target_text.describe(),
                                                                   "sentences": len(sentences),
                                                                   "fingerprint": fingerprint(sentences)},
                   **run.describe()}
        order = [locale for locale, _ in selected]
        steps = [(f"start ({start.name})", [dict(zip(locales, initial))[locale] for locale in order]),
                 ("final (mean over groups)", final_step(order, selected))]
        trace = Explanation(request.target, order, steps, selected, notes)
        return WeightResult(selected, details, trace, notes, group_weights=groups)


@hookimpl
def register_weightings(register):
    register(AdaMergingWeighting())
