"""Page classification tasks score with one function: accuracy, macro-F1 over the classes present, and the
confusion matrix (RVL-CDIP and your own ``classify`` pages alike), and both write the matrix files."""

import pytest

from aetnet.tasks.generic import OwnClassifyTask
from aetnet.tasks.rvl_cdip import RvlCdipTask


def test_own_classes_hand_worked():
    task = OwnClassifyTask()
    task.labels = ["invoice", "letter", "receipt"]
    m = task.score(["invoice", "invoice", "letter"], ["invoice", "letter", "letter"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    # invoice: P 1, R 1/2 -> F1 2/3; letter: P 1/2, R 1 -> F1 2/3; receipt occurs nowhere: not averaged
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_rvl_cdip_uses_the_same_scores():
    task = RvlCdipTask()
    gold, pred = ["letter", "form", "email", "letter"], ["letter", "letter", "email", "letter"]
    m = task.score(gold, pred)
    assert m["accuracy"] == pytest.approx(3 / 4)
    # letter: P 2/3, R 1 -> 0.8; form: 0; email: 1 -> mean over the three present classes
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0 + 1.0) / 3)
    assert len(m["confusion_matrix"]) == 16 and sum(map(sum, m["confusion_matrix"])) == 4


def test_no_gold_scores_zero_and_writes_no_matrix(tmp_path):
    task = OwnClassifyTask()
    task.labels = ["a", "b"]
    m = task.score([], [])
    assert m == {"accuracy": 0.0, "macro_f1": 0.0, "confusion_matrix": []}
    task.write_extras(tmp_path, m)
    assert not list(tmp_path.iterdir())
    task.write_extras(tmp_path, task.score(["a", "b"], ["a", "a"]))
    assert (tmp_path / "confusion_matrix.csv").read_text().splitlines()[1:] == ["a,1,0", "b,1,0"]
