"""Built-in weighting ``representation``: rank and weight sources by how close their training
text lies to the target text in the base encoder's representation space (NN-Rank, Ebrahimi et
al., EMNLP 2025), alone or mixed with URIEL similarity (``mix``)."""

from __future__ import annotations

import math

from merginguriel_core import hookimpl
from merginguriel_core.errors import ConfigError
from merginguriel_core.explain import Explanation, final_step
from merginguriel_core.interfaces import Weighting, WeightingRequest, WeightResult
from merginguriel_core.params import Param


class RepresentationWeighting(Weighting):
    name = "representation"
    description = ("NN-Rank: each source's share of the target sentences' nearest neighbours among the sources' "
                   "training sentences (base encoder), optionally mixed with URIEL similarity.")
    reference = "Ebrahimi et al., NN-Rank, EMNLP 2025, https://arxiv.org/abs/2510.03202"
    needs_target_text = True
    reads = frozenset({"num_languages", "features", "similarity_matrix"})
    params = (
        Param("encoder", str, "", "the base encoder folder or hub id (default: the base model, --base-model or the "
              "spec's models.base)"),
        Param("mix", float, 0.0, "weight of URIEL similarity in the score: 0 representation only, 1 URIEL only",
              minimum=0.0, maximum=1.0),
        Param("neighbours", int, 10, "nearest source sentences per target sentence", minimum=1),
        Param("layer", int, None, "hidden state pooled: 0 the embeddings, L the last block, negative from the end "
              "(default: the middle block)"),
        Param("max_sentences", int, 200, "sentences per language at most (the text budget)", minimum=1),
        Param("source_split", str, "train", "the sources' split compared with the target text",
              choices=("train", "dev", "test")),
        Param("batch_size", int, 32, "sentences per forward pass", minimum=1),
        Param("max_length", int, 128, "tokens per sentence at most", minimum=2),
    )

    def options_read(self, target):
        return self.reads

    def compute(self, request: WeightingRequest) -> WeightResult:
        from merginguriel_core.merge import resolve_device
        from merginguriel_core.models import resolve_location
        from merginguriel_core.representations import Encoder, default_cache_dir, nn_rank
        from merginguriel_core.selection import similarity_details, similarity_matrix_for
        from merginguriel_core.target_text import fingerprint, take, unknown_note, unknown_share

        params, text = request.params, request.target_text
        location = params["encoder"] or request.base_model
        if not location:
            raise ConfigError("weighting 'representation' needs the base encoder: pass --weighting-param "
                              "encoder=PATH_OR_HUB_ID (or --base-model, or models.base in a spec)")
        encoder = Encoder(resolve_location(str(location)), layer=params["layer"], batch_size=params["batch_size"],
                          max_length=params["max_length"], device=resolve_device(request.device),
                          cache_dir=default_cache_dir())
        notes: list[str] = []
        target_sentences, note = take(text.sentences(request.target), params["max_sentences"])
        notes += [note] if note else []
        warning = unknown_note(unknown_share(encoder.tokenizer, target_sentences), request.target)
        notes += [warning] if warning else []
        source_sentences, lacking = {}, []
        for locale in request.available:
            try:
                sentences = text.source_sentences(locale, params["source_split"])
            except ConfigError:
                lacking.append(locale)
                continue
            source_sentences[locale] = take(sentences, params["max_sentences"])[0]
        if lacking:
            notes.append(f"no {params['source_split']} text for {', '.join(lacking)} in the data; skipped")
        if not source_sentences:
            raise ConfigError(f"no source language has {params['source_split']} text to compare with the target text")
        shares = nn_rank(encoder.embed(target_sentences),
                         {locale: encoder.embed(s) for locale, s in source_sentences.items()}, params["neighbours"])
        candidates = list(source_sentences)
        similarity = {locale: math.nan for locale in candidates}
        try:
            matrix = similarity_matrix_for(request)
            row = matrix.index(request.target)
            for locale in candidates:
                if locale in matrix.locales:
                    similarity[locale] = float(matrix.values[row][matrix.locales.index(locale)])
        except ConfigError:
            if params["mix"] > 0:
                raise
            notes.append(f"no URIEL similarity for {request.target}; shown as —")
        finite = {locale: s for locale, s in similarity.items() if math.isfinite(s)}
        total = sum(finite.values())
        uriel_share = {locale: (finite.get(locale, 0.0) / total if total > 0 else 0.0) for locale in candidates}
        mix = params["mix"]
        score = {locale: (1 - mix) * shares[locale] + mix * uriel_share[locale] for locale in candidates}
        ranked = sorted(candidates, key=lambda locale: (-score[locale], -finite.get(locale, 0.0), locale))
        chosen = [locale for locale in ranked[:request.num_languages] if score[locale] > 0]
        if not chosen:
            raise ConfigError(f"weighting 'representation' gave every source score 0 for {request.target}")
        if len(chosen) < min(request.num_languages, len(candidates)):
            notes.append(f"only {len(chosen)} sources have a score above 0; using those")
        chosen_total = sum(score[locale] for locale in chosen)
        selected = [(locale, score[locale] / chosen_total) for locale in chosen]
        steps = [("URIEL similarity", [similarity[locale] for locale in ranked]),
                 ("representation share", [shares[locale] for locale in ranked]),
                 (f"score (mix {mix:g})", [score[locale] for locale in ranked]),
                 ("final", final_step(ranked, selected))]
        details = similarity_details(
            request, params=dict(params), encoder=str(location), layer=encoder.layer,
            representation_share=shares, uriel_similarity={k: v for k, v in similarity.items() if math.isfinite(v)},
            score=score, target_text={**text.describe(), "sentences": len(target_sentences),
                                      "fingerprint": fingerprint(target_sentences)},
            source_sentences={locale: len(s) for locale, s in source_sentences.items()})
        return WeightResult(selected, details, Explanation(request.target, ranked, steps, selected, notes), notes)


@hookimpl
def register_weightings(register):
    register(RepresentationWeighting())
