"""``braintumorseg average``: a bundle whose weights (or one part's) are the mean of several models'."""
import torch
from conftest import cli_main

from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.networks import build

SMALL = {"channels": [4, 8, 16, 32], "blocks": [1, 1, 1, 1]}


def _save(net, folder, model_id, network="resunet", options=None, train=("a", "b")):
    return bundles.save(net, str(folder), {
        "id": model_id, "version": "0", "network": network, "options": options or SMALL,
        "label_scheme": "brats2021", "patch_size": [32, 32, 32], "metrics": {"validation": {"dice_wt": 0.9}},
        "training_data": {"train": list(train)}})


def _resunet(seed):
    torch.manual_seed(seed)
    return build("resunet", **SMALL).eval()


def test_the_average_holds_the_mean_of_every_weight_and_says_what_it_averaged(tmp_path):
    a, b, c = (_save(_resunet(s), tmp_path / f"m{s}", f"m{s}") for s in (1, 2, 3))
    r = cli_main("average", a, b, c, "--out", str(tmp_path / "soup"), "--description", "three seeds")
    assert r.returncode == 0, r.stderr
    soup = bundles.load(tmp_path / "soup")
    nets = [bundles.load(m).network.state_dict() for m in (a, b, c)]
    for name, value in soup.network.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(n[name] for n in nets) / 3)
    doc = soup.manifest.document
    assert soup.id == "soup" and doc["description"] == "three seeds"
    assert [m["id"] for m in doc["averaged"]["with"]] == ["m2", "m3"] and doc["averaged"]["base"]["id"] == "m1"
    assert doc["averaged"]["with"][0]["weights_sha256"] == bundles.read_manifest(b).weights_sha256
    assert "metrics" not in doc  # the base's figures described other weights


def test_a_cascades_stage1_averaged_with_a_2mm_model_leaves_stage2_alone(tmp_path):
    torch.manual_seed(0)
    cascade = build("coarse_to_fine", coarse=SMALL, fine=SMALL).eval()
    base = _save(cascade, tmp_path / "cascade", "cascade", "coarse_to_fine", {"coarse": SMALL, "fine": SMALL})
    other = _save(_resunet(7), tmp_path / "other", "other")
    r = cli_main("average", base, other, "--part", "coarse", "--out", str(tmp_path / "soup"))
    assert r.returncode == 0, r.stderr
    soup = bundles.load(tmp_path / "soup").network
    before, second = bundles.load(base).network, bundles.load(other).network.state_dict()
    for name, value in soup.coarse.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (before.coarse.state_dict()[name] + second[name]) / 2)
    for name, value in soup.fine.state_dict().items():
        assert torch.equal(value, before.fine.state_dict()[name]), name


def test_models_that_cannot_be_averaged_are_refused_in_one_line_naming_the_file(tmp_path):
    a = _save(_resunet(1), tmp_path / "a", "a")
    torch.manual_seed(2)
    wide = _save(build("resunet", channels=[8, 16, 16, 32], blocks=[1, 1, 1, 1]).eval(), tmp_path / "wide", "wide",
                 options={"channels": [8, 16, 16, 32], "blocks": [1, 1, 1, 1]})
    elsewhere = _save(_resunet(3), tmp_path / "elsewhere", "elsewhere", train=("a", "c"))
    for other, problem in ((wide, "does not fit a: other layers or shapes"),
                           (elsewhere, "was trained on other cases than a")):
        r = cli_main("average", a, other, "--out", str(tmp_path / "soup"))
        assert r.returncode == 2 and other in r.stderr and problem in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "soup").exists()
    r = cli_main("average", a, a, "--part", "coarse", "--out", str(tmp_path / "soup"))
    assert r.returncode == 2 and "has no part 'coarse'" in r.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("kept")
    r = cli_main("average", a, a, "--out", str(tmp_path / "full"))
    assert r.returncode == 2 and "not empty" in r.stderr and (tmp_path / "full" / "x").read_text() == "kept"


def test_a_model_trained_on_every_case_takes_its_averaged_designs_figures_from_their_ensemble(tmp_path):
    from BrainTumorSegLib.evaluation.real_validation import ALL_FOUR, MISSING_CONDITIONS
    from BrainTumorSegLib.models import ensembles

    def design(name, seed):
        folds = []
        for k in range(5):
            folds.append(_save(_resunet(seed + k), tmp_path / f"{name}-fold{k}", f"{name}-fold{k}", train=(str(k),)))
        net, folder = _resunet(seed + 9), tmp_path / f"{name}-all"
        bundles.save(net, str(folder), dict(bundles.read_manifest(folds[0]).document, id=f"{name}-all",
                                            training_data={"train": ["all"]},
                                            all_folds={"design_folds": [f"{name}-fold{k}" for k in range(5)]}))
        return str(folder)

    base, other = design("b", 0), design("o", 20)
    for k in range(5):
        r = cli_main("average", str(tmp_path / f"b-fold{k}"), str(tmp_path / f"o-fold{(k + 1) % 5 if k == 4 else k}"),
                     "--out", str(tmp_path / f"soup-fold{k}"))
        assert r.returncode == (2 if k == 4 else 0), r.stderr  # fold 4 with fold 0: other training cases
    assert cli_main("average", str(tmp_path / "b-fold4"), str(tmp_path / "b-fold4"),
                    "--out", str(tmp_path / "soup-fold4")).returncode == 0  # averaged with the wrong model
    searched = {"postprocessing_search": {"conditions": [ALL_FOUR, *MISSING_CONDITIONS]}}
    figures = {"metrics": {"out_of_fold": {"mean": {"dice_wt": 0.8}}, "out_of_fold_postprocessed": searched},
               "postprocessing": {"min_component_voxels": 1000}, "window": "whole"}
    ensembles.save_ensemble(tmp_path / "ens", [str(tmp_path / f"soup-fold{k}") for k in range(5)], figures)
    r = cli_main("average", base, other, "--out", str(tmp_path / "soup-all"), "--figures-from", str(tmp_path / "ens"))
    assert r.returncode == 2 and "member soup-fold4 is not the average of b-fold4, o-fold4" in r.stderr, r.stderr
    assert not (tmp_path / "soup-all").exists()

    (tmp_path / "bad").mkdir()
    (tmp_path / "soup-fold4").rename(tmp_path / "bad" / "soup-fold4")
    assert cli_main("average", str(tmp_path / "b-fold4"), str(tmp_path / "o-fold4"),
                    "--out", str(tmp_path / "soup-fold4")).returncode == 0
    ensembles.save_ensemble(tmp_path / "ens2", [str(tmp_path / f"soup-fold{k}") for k in range(5)], figures)
    r = cli_main("average", base, other, "--out", str(tmp_path / "soup-all"), "--figures-from", str(tmp_path / "ens2"))
    assert r.returncode == 0, r.stderr
    doc = bundles.read_manifest(tmp_path / "soup-all").document
    assert doc["metrics"] == {k: figures["metrics"][k] for k in ("out_of_fold", "out_of_fold_postprocessed")}
    assert doc["design_figures_from"] == "ens2" and doc["window"] == "whole"
    assert doc["all_folds"]["design_folds"] == [f"soup-fold{k}" for k in range(5)]
    assert doc["averaged"]["with"][0]["id"] == "o-all"
