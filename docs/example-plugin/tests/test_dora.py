from pefthub_dora import Dora, DoraMethodConfig

from pefthub.testing import check_method


def test_dora_meets_the_method_contract():
    report = check_method(Dora, DoraMethodConfig(r=4))
    assert report.trainable_params > 0
