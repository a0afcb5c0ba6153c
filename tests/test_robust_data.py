"""Robust data: retired ISO 639-3 codes, the full SIB-200 folder set (205 FLORES-200 codes,
several scripts for some languages), unreadable tables, and a table's label order."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import WORDS, run_cli, installed_registry
from merginguriel_core import notes
from merginguriel_core.data import read_column, read_table
from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.languages import resolve_language
from merginguriel_core.models import DEFAULT_PATTERN
from merginguriel_core.uriel import uriel_vectors

REAL_SIB200 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"

#: The 205 language folders of the full SIB-200 release (dadelani/sib-200 data/annotated and
#: the Davlan/sib200 configs): the 204 FLORES-200 codes plus nqo_Nkoo, which SIB-200 adds.
SIB200_FOLDERS = (
    "ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn als_Latn amh_Ethi apc_Arab arb_Arab "
    "arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn "
    "ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn "
    "ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek "
    "eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn "
    "gaz_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn "
    "hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn "
    "kan_Knda kas_Arab kas_Deva kat_Geor kaz_Cyrl kbp_Latn kea_Latn khk_Cyrl khm_Khmr kik_Latn kin_Latn kir_Cyrl "
    "kmb_Latn kmr_Latn knc_Arab knc_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn "
    "ltg_Latn ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab "
    "min_Latn mkd_Cyrl mlt_Latn mni_Beng mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nqo_Nkoo "
    "nso_Latn nus_Latn nya_Latn oci_Latn ory_Orya pag_Latn pan_Guru pap_Latn pbt_Arab pes_Arab plt_Latn pol_Latn "
    "por_Latn prs_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh "
    "slk_Latn slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn "
    "swe_Latn swh_Latn szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi "
    "tpi_Latn tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab "
    "uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn "
    "zul_Latn"
).split()
#: The FLORES-200 languages written in two scripts, and Levantine Arabic (ajp merged into apc).
SHARED = {"ace": 2, "arb": 2, "bjn": 2, "kas": 2, "knc": 2, "min": 2, "taq": 2, "zho": 2}
HEADER = "index_id\tcategory\ttext\n"


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    """Each test sees every note again (``note_once`` remembers them per process)."""
    monkeypatch.setattr(notes, "_said", set())


def _notes(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "merginguriel"]


def _rows(per_label: int = 2) -> str:
    lines = [f"{i}\t{label}\tthe {words}\n" for label, words in WORDS.items() for i in range(per_label)]
    return HEADER + "".join(lines)


@pytest.fixture(scope="module")
def full_sib(tmp_path_factory) -> Path:
    """Every SIB-200 folder with a header-only test.tsv (a few with rows), plus a stray folder."""
    root = tmp_path_factory.mktemp("sib200_full")
    for code in SIB200_FOLDERS:
        (root / code).mkdir()
        (root / code / "test.tsv").write_text(_rows() if code in ("deu_Latn", "kas_Deva", "ajp_Arab") else HEADER)
    (root / "backup_old").mkdir()
    (root / "backup_old" / "test.tsv").write_text(HEADER)
    (root / ".ipynb_checkpoints").mkdir()  # no split file: not a language folder, no note
    (root / "README.md").write_text("SIB-200\n")
    return root


# ------------------------------------------------------------------ 1. retired ISO 639-3 codes
def test_the_sib200_folder_list_is_205_flores_codes():
    assert len(SIB200_FOLDERS) == len(set(SIB200_FOLDERS)) == 205
    scripts: dict[str, int] = {}
    for code in SIB200_FOLDERS:
        scripts[code[:3]] = scripts.get(code[:3], 0) + 1
    assert {iso: n for iso, n in scripts.items() if n > 1} == SHARED


def test_retired_code_is_read_as_its_successor_with_one_note(caplog):
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        retired, again = resolve_language("ajp"), resolve_language("AJP")
    assert retired == again == resolve_language("apc")
    assert (retired.locale, retired.iso639_3, retired.flores) == ("apc", "apc", None)
    assert _notes(caplog) == [
        "ajp (South Levantine Arabic) was retired from ISO 639-3 on 2023-01-20; read as its successor apc"
    ]


def test_retired_flores_code_keeps_its_folder_and_stays_apart_from_the_successors(caplog):
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        south = resolve_language("ajp_Arab")
        resolve_language("ajp_arab")
    north = resolve_language("apc_Arab")
    assert (south.locale, south.iso639_3, south.flores, south.name) == (
        "ajp_Arab", "ajp", "ajp_Arab", "South Levantine Arabic")
    assert (north.locale, north.iso639_3, north.flores) == ("apc_Arab", "apc", "apc_Arab")
    assert resolve_language(south.locale) == south  # the locale names the same language again
    (message,) = _notes(caplog)
    assert message.startswith("ajp (South Levantine Arabic) was retired from ISO 639-3 on 2023-01-20; merged into apc")
    # URIEL predates the merge: ajp and apc have vectors of their own, and they differ.
    vectors = uriel_vectors([south, north], "syntax_knn+geo")
    assert vectors.shape[0] == 2 and not np.array_equal(vectors[0], vectors[1])


@pytest.mark.parametrize(
    ("code", "words"),
    [("agp", ["'agp'", "Paranan", "2010-01-18", "split", "Pahanan Agta [apf]"]),
     ("agp_Latn", ["'agp_Latn'", "Paranan", "split"]),
     ("aay", ["'aay'", "Aariya", "non-existent", "without a successor"])],
)
def test_retired_code_without_successor_is_a_one_line_language_error(code, words):
    with pytest.raises(LanguageError) as caught:
        resolve_language(code)
    message = str(caught.value)
    assert "\n" not in message and "retired" in message
    for word in words:
        assert word in message


def test_no_iso639_exception_escapes_for_any_retired_code():
    from iso639 import Lang

    retired = [code for code in Lang._deprecated["id"] if len(code) == 3]
    assert len(retired) > 300
    outcomes = {"read": 0, "error": 0}
    for code in retired:
        for spelling in (code, f"{code}_Latn"):
            try:
                language = resolve_language(spelling)
            except LanguageError as exc:
                assert "\n" not in str(exc)
                outcomes["error"] += 1
            else:
                assert resolve_language(language.locale).locale == language.locale
                outcomes["read"] += 1
    assert outcomes["read"] > 100 and outcomes["error"] > 100


def test_similarity_cli_accepts_a_retired_code_with_a_note(runner):
    result = run_cli(runner, "similarity", "--target-lang", "ajp_Arab", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["target"] == "ajp_Arab"
    assert "Note: ajp (South Levantine Arabic) was retired from ISO 639-3 on 2023-01-20" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------- 2. scanning folders that do not all map
def test_scan_of_the_full_sib200_release_returns_every_folder(full_sib, caplog):
    data = installed_registry().get("dataset", "sib200")
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        locales = data.locales(str(full_sib))
        assert data.locales(str(full_sib)) == locales
    assert len(locales) == 205 and locales == sorted(locales)
    assert set(locales) == {resolve_language(code).locale for code in SIB200_FOLDERS}
    assert {"de-DE", "zh-CN", "zh-TW", "ar-SA", "arb_Latn", "kas_Arab", "kas_Deva", "ajp_Arab", "apc_Arab",
            "yor", "nqo"} <= set(locales)
    skipped = [m for m in _notes(caplog) if m.startswith("skipped")]
    assert skipped == [f"skipped folder backup_old of --data-dir {full_sib}: not a language code "
                       f"(unknown language code 'backup_old' (MASSIVE locales, FLORES-200 codes and ISO 639-3 "
                       f"codes are accepted))"]


def test_full_sib200_loads_a_language_by_any_of_its_codes(full_sib):
    data = installed_registry().get("dataset", "sib200")
    for code in ("de-DE", "deu", "deu_Latn", "kas_Deva", "ajp_Arab"):
        examples = data.load(str(full_sib), resolve_language(code).locale, "test")
        assert len(examples) == 14 and examples.labels[0] == "sports", code
    with pytest.raises(ConfigError, match=r"eng_Latn/test.tsv has no examples"):
        data.load(str(full_sib), "eng_Latn", "test")


@pytest.mark.parametrize(
    ("code", "folders"),
    [("kas", "kas_Arab, kas_Deva"), ("apc", "ajp_Arab, apc_Arab"),
     ("ajp", "ajp_Arab, apc_Arab"), ("knc", "knc_Arab, knc_Latn")],
)
def test_a_language_with_two_folders_is_an_error_only_when_asked_for(full_sib, code, folders):
    data = installed_registry().get("dataset", "sib200")
    language = resolve_language(code)
    with pytest.raises(LanguageError) as caught:
        data.load(str(full_sib), language.locale, "test")
    message = str(caught.value)
    assert f"has 2 folders for {language.locale} ({language.name}): {folders}" in message
    assert f"name one by its FLORES-200 code ({folders.replace(', ', ' or ')})" in message


def test_a_locale_lives_in_a_folder_named_by_another_of_its_codes(tmp_path):
    data = installed_registry().get("dataset", "sib200")
    (tmp_path / "ajp_Arab").mkdir()
    (tmp_path / "ajp_Arab" / "test.tsv").write_text(_rows(1))
    (tmp_path / "swa_Latn").mkdir()  # the macrolanguage code, not FLORES's swh_Latn
    (tmp_path / "swa_Latn" / "train.tsv").write_text(_rows(3))
    assert data.locales(str(tmp_path)) == ["ajp_Arab", "sw-KE"]
    assert len(data.load(str(tmp_path), "apc", "test")) == 7  # apc, ajp's successor, lives in ajp_Arab
    assert len(data.load(str(tmp_path), "ajp_Arab", "test")) == 7
    assert len(data.load(str(tmp_path), "sw-KE", "train")) == 21
    with pytest.raises(ConfigError, match=r"swa_Latn/test.tsv does not exist; splits are train, dev, test"):
        data.load(str(tmp_path), "sw-KE", "test")


def test_two_folders_of_one_locale_are_named_when_that_locale_is_asked_for(tmp_path):
    data = installed_registry().get("dataset", "sib200")
    for code in ("swh_Latn", "swa_Latn", "deu_Latn"):
        (tmp_path / code).mkdir()
        (tmp_path / code / "test.tsv").write_text(_rows(1))
    assert data.locales(str(tmp_path)) == ["de-DE", "sw-KE"]
    assert len(data.load(str(tmp_path), "de-DE", "test")) == 7
    with pytest.raises(LanguageError, match=r"has 2 folders for sw-KE \(Swahili\): swa_Latn, swh_Latn; "
                                            r"keep only one of them in --data-dir"):
        data.load(str(tmp_path), "sw-KE", "test")
    assert data.load(str(tmp_path), "swa_Latn", "test").source.endswith("swa_Latn/test.tsv")


def test_nxn_on_the_full_sib200_release(runner, zoo_dir, full_sib, tmp_path):
    out = tmp_path / "nxn"
    result = run_cli(runner, "nxn", "--models", zoo_dir, "--data-dir", full_sib, "--target-langs", "de-DE",
                     "--target-langs", "kas_Deva,ajp_Arab", "--output", out, "--no-cache", "--no-progress")
    assert result.exit_code == 0, result.output
    matrix = pd.read_csv(out / "evaluation_matrix.csv", index_col="source")
    assert list(matrix.columns) == ["de-DE", "kas_Deva", "ajp_Arab"] and len(matrix) == 10
    assert ((matrix >= 0) & (matrix <= 1)).all().all()
    assert "Note: skipped folder backup_old of --data-dir" in result.output
    assert "Traceback" not in result.output


def test_massive_scan_skips_a_file_that_names_no_language(tmp_path, caplog):
    row = {"locale": "de-DE", "partition": "test", "intent": "alarm_set", "utt": "wecke mich"}
    (tmp_path / "de_DE.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    (tmp_path / "sw-KE.jsonl").write_text(json.dumps({**row, "locale": "sw-KE"}) + "\n", encoding="utf-8")
    (tmp_path / "notes-2024.jsonl").write_text("{}\n", encoding="utf-8")
    data = installed_registry().get("dataset", "massive")
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        assert data.locales(str(tmp_path)) == ["de-DE", "sw-KE"]
        assert data.load(str(tmp_path), "de-DE", "test").texts == ["wecke mich"]
    assert [m for m in _notes(caplog) if m.startswith("skipped")] == [
        f"skipped file notes-2024.jsonl of --data-dir {tmp_path}: not a language code (unknown language code "
        f"'notes-2024' (MASSIVE locales, FLORES-200 codes and ISO 639-3 codes are accepted))"]


@pytest.mark.parametrize("name", ["old_runs", "new_test", "all_data"])
def test_a_folder_name_is_flores_shaped_only_with_an_iso_15924_script(name):
    with pytest.raises(LanguageError, match=rf"unknown language code '{name}' \('{name[4:].capitalize()}' is not an "
                                            r"ISO 15924 script code such as Latn\)"):
        resolve_language(name)


@pytest.mark.skipif(not REAL_SIB200.is_dir(), reason="../shared/data/sib200 is not present")
def test_real_sib200_copy_next_to_folders_that_do_not_map(tmp_path, caplog):
    for child in REAL_SIB200.iterdir():
        if child.is_dir():
            (tmp_path / child.name).symlink_to(child, target_is_directory=True)
    (tmp_path / "ajp_Arab").mkdir()
    (tmp_path / "ajp_Arab" / "test.tsv").write_bytes((REAL_SIB200 / "arb_Arab" / "test.tsv").read_bytes())
    (tmp_path / "old_runs").mkdir()
    (tmp_path / "old_runs" / "dev.tsv").write_text(HEADER)
    data = installed_registry().get("dataset", "sib200")
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        locales = data.locales(str(tmp_path))
    assert len(locales) == 53 and "ajp_Arab" in locales and "sw-KE" in locales
    assert any(m.startswith(f"skipped folder old_runs of --data-dir {tmp_path}: not a language code")
               for m in _notes(caplog))
    swahili = data.load(str(tmp_path), "swh", "test")
    assert len(swahili) == 204 and set(swahili.labels) == set(data.labels(str(REAL_SIB200)))
    assert len(data.load(str(tmp_path), "apc", "test")) == 204


# ------------------------------------------------------------------ 3. tables that cannot be read
EVERY_ROW = ("every row needs a text field (text, utt or sentence) and a label field "
             "(label, category or intent)")


def _table(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def test_jsonl_row_without_its_label_names_file_line_and_fields(tmp_path):
    path = _table(tmp_path, "data.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n'
                                          '{"text": "c"}\n')
    with pytest.raises(ConfigError) as caught:
        read_table(path)
    assert str(caught.value) == f"{path} line 4 has no 'label' field; {EVERY_ROW}"


@pytest.mark.parametrize(
    ("line", "message"),
    [('["a", "x"]', "line 2 is an array, not a JSON object; every line must be one object"),
     ('"just text"', "line 2 is a string, not a JSON object"),
     ("42", "line 2 is a number, not a JSON object"),
     ('{"text": "b", "label": null}', f"line 2 has an empty 'label' field; {EVERY_ROW}"),
     ('{"text": ["b"], "label": "y"}', "line 2: 'text' is an array, expected a string"),
     ('{"text": "b", "label": "y"', "line 2 is not JSON: Expecting ',' delimiter; every line must be one JSON object")],
)
def test_jsonl_lines_that_are_not_rows(tmp_path, line, message):
    path = _table(tmp_path, "data.jsonl", '{"text": "a", "label": "x"}\n' + line + "\n")
    with pytest.raises(ConfigError) as caught:
        read_table(path)
    assert str(caught.value).startswith(f"{path} {message}") and "\n" not in str(caught.value)


def test_latin1_csv_names_the_byte_and_the_line(tmp_path):
    path = _table(tmp_path, "data.csv", "text,label\ncafé crème,x\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        read_table(path)
    assert str(caught.value) == f"{path} is not UTF-8: byte 0xe9 on line 2 cannot be decoded; save the file as UTF-8"


@pytest.mark.parametrize(
    ("content", "message"),
    [("text,label\na,x\nb,\n", f"line 3 has an empty 'label' cell; {EVERY_ROW}"),
     ("text,label\na,x\n ,y\n", f"line 3 has an empty 'text' cell; {EVERY_ROW}"),
     ("text,label\na,x\nb\n", f"line 3 has no 'label' cell; {EVERY_ROW}"),
     ('text,label\n"two\nlines",x\nc,\n', f"line 4 has an empty 'label' cell; {EVERY_ROW}"),
     ("text,label\nhello, world,x\n", "line 2 has 3 cells but the header has 2 (text, label); "
                                      "quote a cell that holds a comma")],
)
def test_csv_rows_without_text_or_label(tmp_path, content, message):
    path = _table(tmp_path, "data.csv", content)
    with pytest.raises(ConfigError) as caught:
        read_table(path)
    assert str(caught.value) == f"{path} {message}"


def test_tables_that_are_fine(tmp_path):
    bom = _table(tmp_path, "excel.csv", "\ufefftext,label,locale\nhello,x,de-DE\n,,\n\"a, b\",y,\n".encode())
    examples = read_table(bom)
    assert examples.texts == ["hello", "a, b"] and examples.labels == ["x", "y"]
    assert read_column(bom, "locale") == ["de-DE", ""]
    short = _table(tmp_path, "short.csv", "text,label,split\nhello,x\n")
    assert read_column(short, "split") == [""]
    numbers = _table(tmp_path, "numbers.jsonl", '{"sentence": "hi", "intent": 3, "x": null}\n')
    assert read_table(numbers).labels == ["3"] and read_column(numbers, "x") == [""]


def test_evaluate_on_a_latin1_table_is_a_one_line_error(runner, zoo_dir, tmp_path):
    path = _table(tmp_path, "data.csv", "text,label\ncafé crème,sports\n".encode("latin-1"))
    result = run_cli(runner, "evaluate", "--model", zoo_dir / DEFAULT_PATTERN.format(locale="de-DE"),
                     "--dataset", "table", "--data-file", path, "--locale", "de-DE")
    assert result.exit_code == 1
    assert f"Error: {path} is not UTF-8: byte 0xe9 on line 2 cannot be decoded; save the file as UTF-8" in result.output


def test_table_rows_whose_locale_names_no_language_are_skipped_with_a_note(tmp_path, caplog):
    path = _table(tmp_path, "data.csv", "text,label,locale\na,x,de-DE\nb,y,de-DR\nc,x,\nd,y,deu\n")
    data = installed_registry().get("dataset", "table")
    with caplog.at_level(logging.WARNING, logger="merginguriel"):
        assert data.locales(str(path)) == ["de-DE"]
        assert data.load(str(path), "de-DE", "test").texts == ["a", "d"]
    said = _notes(caplog)
    assert f"skipped 1 row(s) of {path} with an empty locale cell" in said
    assert any(m.startswith(f"skipped 1 row(s) of {path} whose locale 'de-DR' is not a language code") for m in said)


# ------------------------------------------------------------------------ 4. a table's label order
def test_table_labels_are_a_sorted_set_whose_order_is_not_fixed(tmp_path):
    registry = installed_registry()
    table = registry.get("dataset", "table")
    assert table.fixed_label_order is False
    assert registry.get("dataset", "sib200").fixed_label_order is True
    assert registry.get("dataset", "massive").fixed_label_order is True
    path = _table(tmp_path, "t.csv", "text,label\na,travel\nb,sports\nc,health\nd,sports\n")
    assert table.labels(str(path)) == ["health", "sports", "travel"]


def _export(sib_dir: Path, flores: str, path: Path) -> Path:
    frame = pd.read_csv(sib_dir / flores / "test.tsv", sep="\t")
    frame.rename(columns={"category": "label"})[["text", "label"]].to_csv(path, index=False)
    return path


def test_a_sib200_model_evaluates_on_the_same_data_exported_as_csv(runner, zoo_dir, sib_dir, tmp_path):
    model = zoo_dir / DEFAULT_PATTERN.format(locale="de-DE")
    csv = _export(sib_dir, "deu_Latn", tmp_path / "de.csv")
    common = ("--model", model, "--locale", "de-DE", "--no-cache")
    native = run_cli(runner, "evaluate", *common, "--dataset", "sib200", "--data-dir", sib_dir)
    exported = run_cli(runner, "evaluate", *common, "--dataset", "table", "--data-file", csv)
    assert native.exit_code == 0, native.output
    assert exported.exit_code == 0, exported.output
    first, second = json.loads(native.stdout), json.loads(exported.stdout)
    assert first["accuracy"] == second["accuracy"] and first["macro_f1"] == second["macro_f1"]
    assert first["examples"] == second["examples"] == 21


def test_a_table_label_the_model_lacks_is_an_error_naming_both_label_sets(runner, zoo_dir, tmp_path):
    model = zoo_dir / DEFAULT_PATTERN.format(locale="de-DE")
    csv = _table(tmp_path, "t.csv", "text,label\nthe match,sports\nthe film,cinema\n")
    result = run_cli(runner, "evaluate", "--model", model, "--dataset", "table", "--data-file", csv,
                     "--locale", "de-DE")
    assert result.exit_code == 1
    error = next(line for line in result.output.splitlines() if line.startswith("Error: "))
    assert "cinema" in error and "science/technology" in error
