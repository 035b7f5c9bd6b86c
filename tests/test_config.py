"""The one configuration: generated flags and their help, checks naming the flag, presets
as configurations, run names, and what a resumed run may change."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from sgan_keras import Config, ConfigError
from sgan_keras import config as config_lib
from sgan_keras import presets
from sgan_keras import train
from sgan_keras import trainer
from sgan_keras.checks import is_integer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Every flag the CLI had before the configuration was generated: recorded
# experiment commands (experiments/results/*.md) use them, so each must stay.
FLAGS_BEFORE = (
    "dataset", "labels", "preset", "fake_class", "generator_loss", "generator_activation",
    "manifold_reg", "manifold_weight", "manifold_epsilon", "unsupervised_weight",
    "label_smoothing", "ema", "epochs", "steps_per_epoch", "batch_size", "lr", "d_lr_ratio",
    "adam_epsilon", "adam_rule", "init_images", "init_from", "procedure", "label_selection",
    "label_batching", "update_order", "generator_fakes", "baseline_epochs",
    "baseline_steps_per_epoch", "seed", "data_dir", "include_extra", "output_dir", "strategy",
    "virtual_cpus", "supervised_only", "overwrite", "deterministic", "jit_compile", "precision",
    "eval_batch_size", "checkpoint_every_steps")


def cli_flags():
    """A fresh set of the CLI's flags (absl's FlagValues), defined from the fields."""
    values = flags.FlagValues()
    config_lib.define_flags(values, preset_names=sorted(presets.PRESETS))
    return values


@pytest.fixture
def flag_values():
    return cli_flags()


def parse(flag_values, *argv):
    """``{flag: value}`` of ``argv`` (``None``: not given), as ``train.main`` reads them."""
    flag_values(["train", *argv])
    return {name: flag_values[name].value for name in config_lib.flag_names()}


# ---------------------------------------------------------------- the flags
def test_every_field_is_one_flag_with_its_help_type_and_choices(flag_values):
    defined = set(flag_values)
    assert set(FLAGS_BEFORE) <= defined
    assert set(config_lib.flag_names()) <= defined
    assert len(set(config_lib.flag_names())) == len(config_lib.flag_names())
    for option in config_lib.OPTIONS.values():
        if not option.flag:       # fixed by the preset
            assert option.name in ("architecture", "pixel_range", "bfloat16_checked_in"), \
                option.name
            continue
        flag = flag_values[option.flag]
        assert flag.help.endswith(option.help) and flag.default is None, option.flag
        kind = {bool: "bool", int: "int", float: "float"}.get(option.type)
        if option.parser is not None:
            assert flag.flag_type() == option.parser.flag_type()
        elif kind:
            assert flag.flag_type() == kind, option.flag
        elif option.name == "preset":
            assert flag.parser.enum_values == sorted(presets.PRESETS)
        elif option.choices is not None:
            assert flag.parser.enum_values == [c for c in option.choices if c], option.flag
        else:
            assert flag.flag_type() == "string", option.flag


def test_flags_of_other_names_set_their_field(flag_values):
    overrides = config_lib.overrides_from_flags(parse(
        flag_values, "--lr=0.01", "--ema=0.5", "--manifold_reg=lecouat", "--labels=all",
        "--nodeterministic"))
    assert overrides == {"g_lr": 0.01, "ema_decay": 0.5, "manifold": "lecouat",
                         "labels": "all", "deterministic": False}
    assert config_lib.overrides_from_flags(parse(cli_flags())) == {}


def test_labels_flag_takes_a_number_or_all_and_absl_rejects_other_text(flag_values):
    assert parse(flag_values, "--labels=250")["labels"] == 250
    with pytest.raises(flags.IllegalFlagValueError, match="--labels=ten: must be a positive "
                                                           "integer or 'all'"):
        parse(flag_values, "--labels=ten")


# --------------------------------------------------------------- the checks
@pytest.mark.parametrize("field, value, message", [
    ("g_lr", 0.0, r"^--lr \(g_lr\) must be positive, got 0.0$"),
    ("g_lr", float("inf"), r"^--lr \(g_lr\) must be a finite number, got inf$"),
    ("label_smoothing", float("nan"), r"^--label_smoothing must be a finite number, got nan$"),
    ("ema_decay", 1.0, r"^--ema \(ema_decay\) must be in \[0, 1\), got 1.0$"),
    ("label_smoothing", -0.1, r"^--label_smoothing must be in \[0, 1\), got -0.1$"),
    # Values that float32, which training computes in, turns into 0, 1 or inf:
    # NaN at the first step, a weight average that never moves, inf losses.
    ("adam_epsilon", 1e-300, r"^--adam_epsilon must be 0 or 1.175e-38..3.403e\+38 in magnitude "
                             r"in float32, which training computes in: got 1e-300, 0.0 in float32$"),
    # A float32 subnormal, which TensorFlow's CPU kernels flush to zero.
    ("adam_epsilon", 1e-40, r"^--adam_epsilon must be 0 or 1.175e-38..3.403e\+38 in magnitude "
                            r"in float32, which training computes in: got 1e-40, 9.99"),
    ("ema_decay", 0.99999999, r"^--ema \(ema_decay\) must be in \[0, 1\) in float32, which "
                              r"training computes in: got 0.99999999, 1.0 in float32$"),
    ("unsupervised_weight", 1e300, r"^--unsupervised_weight must be 0 or .* got 1e\+300, inf "
                                   r"in float32$"),
    ("batch_size", 0, r"^--batch_size must be positive, got 0$"),
    ("epochs", 2.5, r"^--epochs must be int, got 2.5$"),
    # Past int64 a tensor cannot hold it: TensorFlow's ValueError traceback.
    ("batch_size", 10**20, r"^--batch_size must be below 2\*\*63 \(int64, which TensorFlow "
                           r"counts in\), got 100000000000000000000$"),
    ("init_images", -1, r"^--init_images must be >= 0, got -1$"),
    ("checkpoint_every_steps", -1, r"^--checkpoint_every_steps must be >= 0"),
    ("fake_class", "eleven", r"^--fake_class must be one of \('zero', 'learned', "),
    ("manifold", "yes", r"^--manifold_reg \(manifold\) must be one of"),
    ("pixel_range", (0.0, 2.0), r"^pixel_range must be one of"),
    ("labels", 0, r"^--labels must be a positive integer or 'all', got 0$"),
    ("labels", 7, r"^--labels=7 must be a multiple of mnist's 10 classes with "
                  r"--label_selection=balanced$"),
    ("deterministic", "yes", r"^--deterministic must be bool"),
    ("output_dir", "", r"^--output_dir must be a non-empty path of UTF-8 text, got ''$"),
    ("output_dir", "caf\udce9", r"^--output_dir must be a non-empty path of UTF-8 text, "
                                r"got 'caf\\udce9'$"),
    # TensorFlow read its checkpoints' paths as file patterns: a resume found none.
    ("output_dir", "runs/lr[0.1]", r"^--output_dir=runs/lr\[0.1\] has \[, which TensorFlow "
                                   r"reads as a file pattern .*: choose a path without \*, \?, "),
    # Each of TensorFlow's pattern characters, the backslash (its escape) too.
    ("output_dir", "runs\\lr", r"^--output_dir=runs\\lr has \\, which TensorFlow reads "),
    ("output_dir", "runs/*", r"^--output_dir=runs/\* has \*, which TensorFlow reads "),
    ("output_dir", "runs/a?", r"^--output_dir=runs/a\? has \?, which TensorFlow reads "),
    # An empty --data_dir= read as a directory '' ("data_dir  does not exist").
    ("data_dir", "", r"^--data_dir must be a non-empty path \(leave it out for the default\), "
                     r"got ''$"),
])
def test_a_bad_value_is_refused_in_one_line_naming_its_flag(field, value, message):
    with pytest.raises(ConfigError, match=message) as error:
        Config().replace(**{field: value})
    assert "\n" not in str(error.value)


def test_a_label_budget_balanced_classes_cannot_share_is_a_bad_flag(tmp_path, monkeypatch):
    # It was refused only once the data was read: after a download attempt
    # (offline: "cannot download mnist") and after flags.json was written.
    assert Config().replace(labels=7, label_selection="first").data.labels == 7
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--labels=7 must be a multiple"):
        train.resolve_config({"labels": 7})
    assert not list(tmp_path.iterdir())


def test_a_utf8_name_refused_under_an_ascii_file_name_encoding_says_to_change_the_locale():
    """With ``PYTHONUTF8=0 LC_ALL=C`` Python decodes argv and file names as
    ASCII, so a UTF-8 name arrives as lone surrogates: the message names the
    encoding as the cause, not the name."""
    result = subprocess.run(
        [sys.executable, "-c", "import os, sys\n"
         "from sgan_keras.config import Config\n"
         "try:\n    Config().replace(output_dir=os.fsdecode(b'caf\\xc3\\xa9'))\n"
         "except Exception as error:\n    print(error)\n"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(
        "(this Python decodes file names as ascii: run it under a UTF-8 locale, e.g. "
        "LC_ALL=C.UTF-8, or with PYTHONUTF8=1), got 'caf\\udcc3\\udca9'"), result.stdout


def test_each_section_checks_itself_when_made():
    with pytest.raises(ConfigError, match=r"--ema \(ema_decay\)"):
        config_lib.ModelConfig(ema_decay=2.0)
    with pytest.raises(ConfigError, match="--eval_batch_size"):
        config_lib.RunConfig(eval_batch_size=0)


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "svhn"}, r"--preset=mnist_blog is built for \(28, 28, 1\) images, but "
                          r"--dataset=svhn has \(32, 32, 3\)"),
    ({"generator_activation": "softplus"}, "--generator_activation=softplus: the "
                                           "mnist_blog generator allows tanh"),
    ({"include_extra": True}, "--include_extra applies to --dataset=svhn only"),
    # The preset set generator_fakes, not the user: the line says what to give.
    ({"update_order": "split"}, r"needs --update_order=sequential, got 'split'; with another "
                                r"order, give --generator_fakes=fresh too"),
    ({"precision": "mixed_bfloat16", "manifold": "blog"},
     "--precision=mixed_bfloat16 cannot be used with --manifold_reg=blog: manifold "
     "regularization needs float32"),
])
def test_combinations_are_checked_across_sections(changes, message):
    config = presets.get_preset("mnist_blog").config
    with pytest.raises(ConfigError, match=message):
        config.replace(**changes)


@pytest.mark.parametrize("dataset", ["folder:/data/pets", "tfds:mnist"])
def test_a_generator_activation_the_preset_lacks_is_refused_for_ones_own_data(dataset):
    """The check sat under the image-shape one, which own data sets skip: the
    run wrote its directory, then G's build ended in a ValueError traceback."""
    with pytest.raises(ConfigError, match=r"^--generator_activation=softplus: the mnist_blog "
                                          r"generator allows tanh$"):
        presets.resolve({"preset": "mnist_blog", "dataset": dataset,
                         "generator_activation": "softplus"})


def test_replace_reaches_every_section_and_refuses_unknown_fields():
    config = Config().replace(g_lr=0.1, fake_class="learned", labels="all", strategy="mirrored",
                              seed=3)
    assert (config.training.g_lr, config.model.fake_class, config.data.labels,
            config.run.strategy, config.seed) == (0.1, "learned", "all", "mirrored", 3)
    assert config.training.d_lr == pytest.approx(0.1)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['lr'\] \(--lr is the "
                       r"field g_lr\); allowed"):
        Config().replace(lr=0.1)     # the flag's name, not the field's: named
    with pytest.raises(ConfigError, match=r"\['ema', 'manifold_reg', 'x'\] \(--ema is the "
                       r"field ema_decay; --manifold_reg is the field manifold\); allowed"):
        Config().replace(ema=0.9, manifold_reg="blog", x=1)


# ------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_presets_are_configs_and_round_trip_through_json(name):
    config = presets.get_preset(name).config
    assert isinstance(config, Config) and config.preset == name
    assert config.model.architecture == name
    assert presets.resolve({"preset": name}) == config
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_resolve_picks_the_datasets_preset_and_the_baselines_budget():
    assert presets.resolve({}).preset == "mnist_improved_gan"
    assert presets.resolve({"dataset": "cifar10"}).preset == "cifar10_improved_gan"
    assert presets.resolve({"preset": "svhn_dcgan"}).data.dataset == "svhn"
    baseline = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True})
    assert (baseline.training.epochs, baseline.training.steps_per_epoch) == (30, 4)
    shorter = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                               "epochs": 2})
    assert (shorter.training.epochs, shorter.training.steps_per_epoch) == (2, 4)
    own_length = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                                  "baseline_epochs": 5, "baseline_steps_per_epoch": 7})
    assert (own_length.training.epochs, own_length.training.steps_per_epoch) == (5, 7)
    with pytest.raises(ConfigError, match="--baseline_epochs changes nothing without "
                                          "--supervised_only; drop it"):
        presets.resolve({"preset": "mnist_gans_in_action", "baseline_epochs": 5})
    # Both lengths given: --epochs won and --baseline_epochs changed nothing.
    for field in ("epochs", "steps_per_epoch"):
        with pytest.raises(ConfigError, match=f"^--{field} and --baseline_{field} both set "):
            presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                             field: 2, "baseline_" + field: 5})


@pytest.mark.parametrize("overrides, refused", [
    ({"lr_decay_rate": 0.9}, "--lr_decay_rate changes nothing without "
                             "--lr_schedule=per_epoch_decay"),
    ({"lr_decay_start_epoch": 3}, "--lr_decay_start_epoch changes nothing without "
                                  "--lr_schedule=linear_decay"),
    ({"noise": "uniform", "noise_stddev": 0.5}, "--noise_stddev changes nothing without "
                                                "--noise=normal"),
    ({"init_from": "labeled"}, "--init_from changes nothing without --init_images above 0"),
    ({"train_split": "train[:50%]"}, "--train_split changes nothing without a tfds: --dataset"),
    ({"convert_channels": True}, "--convert_channels changes nothing without a folder: or "
                                 "tfds: --dataset"),
    ({"manifold_weight": 0.1}, "--manifold_weight changes nothing without "
                               "--manifold_reg=lecouat or blog"),
    ({"ema_rule": "improved_gan"}, "--ema_rule changes nothing without --ema above 0"),
    ({"conv_padding": "half"}, "--conv_padding changes nothing without an SVHN or CIFAR-10 "
                               "Improved-GAN or Lecouat preset"),
    ({"sample_mode": "training"}, "--sample_mode changes nothing without a preset whose G "
                                  "has batch norm (all but mnist_blog)"),
    # On the CPU, auto's default strategy and multi_worker's use one device.
    ({"virtual_cpus": 2}, "--virtual_cpus changes nothing without --strategy=mirrored"),
])
def test_an_option_that_would_change_nothing_is_refused(overrides, refused):
    """Each option declares what it needs (config.option's ``needs``): given
    without it, it is refused rather than recorded in flags.json and the run
    name while doing nothing; with it, it is taken."""
    base = {"preset": "mnist_blog"}
    with pytest.raises(ConfigError, match=re.escape(refused + "; drop it")):
        presets.resolve({**base, **overrides})
    field = next(iter(overrides.keys() - {"noise"}))
    needed, _, _ = config_lib.OPTIONS[field].needs
    enabling = {"lr_schedule": {"lr_decay_rate": "per_epoch_decay",
                                "lr_decay_start_epoch": "linear_decay"}.get(field),
                "noise": "normal", "init_images": 10, "dataset": "tfds:mnist",
                "manifold": "blog", "strategy": "mirrored", "ema_decay": 0.999,
                "architecture": "svhn_lecouat"}[needed]
    dataset = {"architecture": {"dataset": "svhn"}}.get(needed, {})   # its images
    taken = presets.resolve({**base, **overrides, needed: enabling, **dataset})
    assert taken.value(field) == overrides[field]
    unified = presets.resolve({"preset": "mnist_gans_in_action", "procedure": "unified"})
    assert all(unified.value(field) == value
               for field, value in presets.UNIFIED_PROCEDURE.items())


def test_the_gan_step_options_are_gan_only():
    """A supervised-only step has no D/G order, no fakes and takes labeled
    batches alone: these flags would be accepted and change nothing."""
    assert {"update_order", "generator_fakes", "label_batching"} <= set(
        config_lib.gan_only_flags())


@pytest.mark.parametrize("flag", config_lib.gan_only_flags())
def test_a_baseline_refuses_every_gan_only_flag(flag):
    field = next(o.name for o in config_lib.OPTIONS.values() if o.flag == flag)
    value = presets.get_preset("svhn_lecouat").config.value(field)
    with pytest.raises(ConfigError, match=f"--supervised_only trains no generator; drop --{flag}"):
        presets.resolve({"preset": "svhn_lecouat", "supervised_only": True, field: value})


# ---------------------------------------------------------------- run names
def resolve_flags(*argv):
    return train.resolve_config(parse(cli_flags(), "--preset=mnist_blog", "--labels=100", *argv))


def test_run_names_say_every_option_that_differs_from_the_preset():
    plain = resolve_flags()
    assert plain.run.output_dir == "runs/mnist_mnist_blog_labels100_seed0"
    first = resolve_flags("--lr=0.001")
    second = resolve_flags("--lr=0.002")
    assert first.run.output_dir == "runs/mnist_mnist_blog_labels100_lr0.001_seed0"
    assert second.run.output_dir != first.run.output_dir       # no longer one directory
    varied = resolve_flags("--manifold_reg=blog", "--ema=0.999",
                           "--fake_class=learned", "--seed=2", "--checkpoint_every_steps=5",
                           "--jit_compile=false", "--data_dir=/somewhere")
    assert varied.run.output_dir == ("runs/mnist_mnist_blog_labels100_fake_class_learned_"
                                     "manifold_reg_blog_ema0.999_seed2")
    baseline = resolve_flags("--supervised_only", "--procedure=unified")
    assert baseline.run.output_dir == "runs/mnist_mnist_blog_labels100_supervised_unified_seed0"


def test_run_names_of_floats_that_differ_past_six_digits_differ():
    """:g's six digits made --ema=0.9999995 and --ema=0.9999999 both ``ema1``."""
    first, second = resolve_flags("--ema=0.9999995"), resolve_flags("--ema=0.9999999")
    assert first.run.output_dir == "runs/mnist_mnist_blog_labels100_ema0.9999995_seed0"
    assert second.run.output_dir == "runs/mnist_mnist_blog_labels100_ema0.9999999_seed0"
    assert resolve_flags("--lr=3e-4").run.output_dir.endswith("_lr0.0003_seed0")


def test_run_names_of_tfds_configs_keep_the_data_sets_name():
    """tfds:NAME/config was named by its config alone: tfds:mnist_corrupted/fog
    and tfds:cifar10_corrupted/fog were one directory, tfds-fog."""
    names = [presets.run_name(presets.resolve({
        "preset": "svhn_dcgan", "dataset": dataset, "convert_channels": True}))
        for dataset in ("tfds:mnist_corrupted/fog", "tfds:cifar10_corrupted/fog",
                        "folder:/data/pets/")]
    assert [name.split("_svhn_dcgan")[0] for name in names] == [
        "tfds-mnist_corrupted-fog", "tfds-cifar10_corrupted-fog", "folder-pets"]


def test_the_sources_generator_activation_given_explicitly_is_the_preset_unchanged():
    """``--generator_activation=sigmoid`` on mnist_improved_gan (the source's)
    named another run directory, and a resume of the run without it, or the
    reverse, was refused as "a run with other flags"."""
    for preset, source in (("mnist_improved_gan", "sigmoid"), ("mnist_blog", "tanh")):
        plain = train.resolve_config(parse(cli_flags(), f"--preset={preset}"))
        given = train.resolve_config(parse(cli_flags(), f"--preset={preset}",
                                           f"--generator_activation={source}"))
        assert given == plain and given.run.output_dir == plain.run.output_dir
        assert given.model.generator_activation == ""
        older = {**plain.to_dict(), "generator_activation": source}   # an older flags.json
        assert trainer.changed_options(older, plain) == []
    plain = presets.resolve({"preset": "mnist_improved_gan"})
    softplus = plain.replace(generator_activation="softplus")
    assert softplus.model.generator_activation == "softplus"
    assert trainer.changed_options(plain.to_dict(), softplus) == ["generator_activation"]


def test_run_names_of_tfds_split_slices_are_usable_output_dirs():
    """``--train_split=train[:50%]`` named a default --output_dir with a [,
    which RunConfig then refused as a file pattern: the flag alone failed."""
    names = [train.resolve_config(parse(
        cli_flags(), "--preset=mnist_blog", "--dataset=tfds:mnist", f"--{flag}={split}")
    ).run.output_dir for flag, split in (("train_split", "train[:50%]"),
                                         ("train_split", "train[50%:]"),
                                         ("test_split", "test[:1000]"))]
    assert names == ["runs/tfds-mnist_mnist_blog_labels4000_train_split_train(:50%)_seed0",
                     "runs/tfds-mnist_mnist_blog_labels4000_train_split_train(50%:)_seed0",
                     "runs/tfds-mnist_mnist_blog_labels4000_test_split_test(:1000)_seed0"]


def test_a_leading_tilde_in_a_path_flag_is_the_home_directory(monkeypatch):
    """The shell leaves ``--data_dir=~/data`` alone; the run would look for, or
    create, a directory named ``~``."""
    monkeypatch.setenv("HOME", "/home/someone")
    config = resolve_flags("--data_dir=~/data", "--output_dir=~/runs/a")
    assert (config.data.data_dir, config.run.output_dir) == ("/home/someone/data",
                                                              "/home/someone/runs/a")
    folder = train.resolve_config(parse(cli_flags(), "--preset=mnist_blog",
                                        "--dataset=folder:~/photos", "--labels=10"))
    assert folder.data.dataset == "folder:/home/someone/photos"


# ---------------------------------------------------------------- resuming
def test_a_resume_compares_every_option_but_the_run_only_ones():
    config = presets.get_preset("mnist_gans_in_action").config
    earlier = config.to_dict()
    assert trainer.changed_options(earlier, config.replace(
        output_dir="elsewhere", eval_batch_size=7, strategy="mirrored")) == []
    assert trainer.changed_options(earlier, config.replace(g_lr=0.5, seed=1)) == ["g_lr", "seed"]
    # flags.json of an older version lacks the fields that had no flag then:
    # their value was the preset's.
    older = {k: v for k, v in earlier.items() if k not in ("noise_stddev", "g_beta_1")}
    assert trainer.changed_options(older, config) == []
    assert trainer.changed_options(older, config.replace(noise_stddev=0.5)) == ["noise_stddev"]
    # An option that cannot act on the run is not compared: a baseline's data
    # order in the GAN's run; in a baseline's run it is.
    other_order = {**earlier, "baseline_data_order": ""}
    assert trainer.changed_options(other_order, config) == []
    baseline = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True})
    assert trainer.changed_options({**baseline.to_dict(), "baseline_data_order": ""},
                                   baseline) == ["baseline_data_order"]


def test_the_improved_gan_presets_scale_pixels_as_their_source():
    """improved-gan divides by 256 (its MNIST's x / 256, its CIFAR-10's
    (x - 127.5) / 128), its SVHN and every other source by 255."""
    scales = {name: preset.config.model.pixel_scale for name, preset in presets.PRESETS.items()}
    assert {name for name, scale in scales.items() if scale == "256"} == {
        "mnist_improved_gan", "cifar10_improved_gan"}
    assert not any(deviation.aspect == "pixel scale" for preset in presets.PRESETS.values()
                   for deviation in preset.deviations)


def test_the_sources_that_reshuffle_every_epoch_order_their_batches_per_epoch():
    """improved-gan's and Lecouat et al.'s scripts take int(N / batch) batches of
    each epoch's reshuffle (the labeled set tiled and cut the same way), the
    Udacity notebook reshuffles every epoch: their presets' data order; the
    blog (a shuffle buffer) keeps the package's joined order, and so does
    --procedure=unified. The Udacity notebook cuts each epoch's reshuffle
    with range(0, 73257, 128), its last batch of 41 (per_shuffle). GANs in
    Action draws every batch with replacement (np.random.randint), its
    unlabeled ones from the images outside its labeled set."""
    orders = {name: preset.config.training.data_order for name, preset in presets.PRESETS.items()}
    assert {name for name, order in orders.items() if order == "per_epoch"} == {
        "mnist_improved_gan", "svhn_improved_gan", "cifar10_improved_gan",
        "svhn_lecouat", "cifar10_lecouat"}
    assert {name for name, order in orders.items() if order == "per_shuffle"} == {"svhn_dcgan"}
    assert presets.get_preset("svhn_dcgan").config.training.steps_per_epoch == 573
    assert {name for name, order in orders.items() if order == "with_replacement"} == {
        "mnist_gans_in_action"}
    pools = {name: preset.config.data.unlabeled_pool for name, preset in presets.PRESETS.items()}
    assert {name for name, pool in pools.items() if pool == "unlabeled_only"} == {
        "mnist_gans_in_action"}
    assert not any(deviation.aspect in ("data order", "sampling", "unlabeled pool")
                   and deviation.option == "none"
                   for name, preset in presets.PRESETS.items() if orders[name] != "joined"
                   for deviation in preset.deviations)
    training = presets.get_preset("svhn_improved_gan").config.training
    assert training.epoch_steps == training.steps_per_epoch == 732
    assert presets.get_preset("mnist_blog").config.training.epoch_steps == 0
    unified = presets.resolve({"preset": "svhn_improved_gan", "procedure": "unified"})
    assert unified.training.data_order == "joined" and unified.training.epoch_steps == 0
    gans_in_action = presets.get_preset("mnist_gans_in_action").config.training
    assert gans_in_action.with_replacement and gans_in_action.epoch_steps == 0
    unified = presets.resolve({"preset": "mnist_gans_in_action", "procedure": "unified"})
    assert not unified.training.with_replacement and unified.data.unlabeled_pool == "all"


def test_the_udacity_notebooks_preset_tests_on_the_first_half_of_the_test_split():
    assert presets.get_preset("svhn_dcgan").config.data.test_fraction == 0.5
    assert {name for name, preset in presets.PRESETS.items()
            if preset.config.data.test_fraction != 1} == {"svhn_dcgan"}
    assert not any(deviation.aspect == "test set" for deviation in
                   presets.get_preset("svhn_dcgan").deviations)
    assert presets.resolve({"preset": "svhn_dcgan", "procedure": "unified"}
                           ).data.test_fraction == 1
    for bad in (0, 1.5):
        with pytest.raises(config_lib.ConfigError, match=r"--test_fraction.*in \(0, 1\]"):
            presets.resolve({"preset": "svhn_dcgan", "test_fraction": bad})


def test_the_gans_in_action_notebooks_generator_is_gans_in_actions_choice_only():
    config = presets.resolve({"preset": "mnist_gans_in_action",
                              "gans_in_action_generator": "notebook"})
    assert config.model.gans_in_action_generator == "notebook"
    assert "gans_in_action_generator_notebook" in presets.run_name(config)
    with pytest.raises(config_lib.ConfigError, match="--preset=mnist_gans_in_action"):
        presets.resolve({"preset": "mnist_blog", "gans_in_action_generator": "notebook"})


def test_gans_in_action_takes_keras_2s_batch_norm_variance_and_the_others_keras_3s():
    """GANs in Action ran Keras 2, whose batch norms move their moving variance
    toward the unbiased estimate: its preset's default, with no deviation row
    left; every other preset, and the unified procedure, keep Keras 3's. A
    preset without batch norm refuses the flag, and an older flags.json
    without the field is read as the rule it trained with."""
    assert {name for name, preset in presets.PRESETS.items()
            if preset.config.model.batch_norm_variance == "unbiased"} == {"mnist_gans_in_action"}
    assert not any("variance" in deviation.aspect for preset in presets.PRESETS.values()
                   for deviation in preset.deviations)
    assert presets.resolve({"preset": "mnist_gans_in_action", "procedure": "unified"}
                           ).model.batch_norm_variance == "biased"
    biased = presets.resolve({"preset": "mnist_gans_in_action", "batch_norm_variance": "biased"})
    assert "batch_norm_variance_biased" in presets.run_name(biased)
    with pytest.raises(config_lib.ConfigError, match="--batch_norm_variance changes nothing"):
        presets.resolve({"preset": "mnist_blog", "batch_norm_variance": "unbiased"})
    older = presets.get_preset("mnist_gans_in_action").config.to_dict()
    del older["batch_norm_variance"]
    assert config_lib.Config.from_dict(older).model.batch_norm_variance == "biased"


def test_lecouats_svhn_preset_and_the_blog_test_on_their_sources_test_batches():
    """Lecouat et al.'s train_svhn.py scores int(26032 / 50) batches of a test
    set it permutes every epoch: svhn_lecouat's default (its CIFAR-10 script's
    10,000 / 25 leaves no image out); the MNIST blog reads the next 312 batches
    of a repeating test stream (test_data.py); the unified procedure scores
    every image, and so does an older run's flags.json."""
    tests = {name: preset.config.data.test_batches for name, preset in presets.PRESETS.items()}
    assert {name: order for name, order in tests.items() if order != "all"} == {
        "svhn_lecouat": "reshuffled_full", "mnist_blog": "stream"}
    assert presets.get_preset("svhn_lecouat").deviations == ()
    assert not any(deviation.aspect == "test batches" for preset in presets.PRESETS.values()
                   for deviation in preset.deviations)
    assert presets.resolve({"preset": "svhn_lecouat", "procedure": "unified"}
                           ).data.test_batches == "all"
    older = presets.get_preset("svhn_lecouat").config.to_dict()
    del older["test_batches"]
    assert config_lib.Config.from_dict(older).data.test_batches == "all"
    config = presets.resolve({"preset": "mnist_blog", "test_batches": "reshuffled_full"})
    assert "test_batches_reshuffled_full" in presets.run_name(config)


def test_a_baseline_takes_its_own_data_order_and_per_shuffle_needs_one_stream():
    """GANs in Action's baseline is Keras' fit(batch_size=32, epochs=30) on its
    100 labels: each epoch a reshuffle in batches of 32, 32, 32 and 4
    (per_shuffle), while its GAN draws with replacement. A baseline takes
    --baseline_data_order unless --data_order is given; the two together are
    refused, and so is per_shuffle for a GAN with a labeled batch beside
    unlabeled ones (three streams whose last batches would not line up)."""
    baseline = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True})
    assert baseline.training.data_order == "per_shuffle" and baseline.training.partial_batches
    assert (baseline.training.epochs, baseline.training.steps_per_epoch) == (30, 4)
    gan = presets.resolve({"preset": "mnist_gans_in_action"})
    assert gan.training.data_order == "with_replacement" and not gan.training.partial_batches
    assert presets.run_name(baseline) == presets.run_name(gan).replace(
        "labels100", "labels100_supervised")
    given = presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                             "data_order": "joined"})
    assert given.training.data_order == "joined"
    assert presets.resolve({"preset": "mnist_blog", "supervised_only": True}
                           ).training.data_order == "shuffle_buffer"     # '' = the GAN's
    with pytest.raises(config_lib.ConfigError, match="both set the baseline's data order"):
        presets.resolve({"preset": "mnist_gans_in_action", "supervised_only": True,
                         "data_order": "joined", "baseline_data_order": "joined"})
    with pytest.raises(config_lib.ConfigError, match="--data_order=per_shuffle cuts the "
                                                     "shuffles of one stream"):
        presets.resolve({"preset": "mnist_blog", "data_order": "per_shuffle"})
    assert presets.resolve({"preset": "mnist_gans_in_action", "procedure": "unified",
                            "supervised_only": True}).training.data_order == "joined"
    assert not any(deviation.aspect in ("baseline batches", "epoch length")
                   for preset in presets.PRESETS.values() for deviation in preset.deviations)


def test_the_blog_reads_its_streams_through_a_shuffle_buffer_whose_size_is_an_option():
    """mnist_blog's pipelines read each stream through .shuffle(4000): its
    data order, with the buffer's size an option that names its run and is
    refused where it would change nothing; --procedure=unified joins plain
    shuffles, and its deviation table no longer lists the data order."""
    blog = presets.resolve({"preset": "mnist_blog"})
    assert (blog.training.data_order, blog.training.buffer_size) == ("shuffle_buffer", 4000)
    assert presets.resolve({"preset": "mnist_blog", "procedure": "unified"}
                           ).training.buffer_size == 0
    assert presets.resolve({"preset": "mnist_blog", "data_order": "joined"}
                           ).training.buffer_size == 0
    smaller = presets.resolve({"preset": "mnist_blog", "shuffle_buffer": 1000})
    assert "shuffle_buffer1000" in presets.run_name(smaller)
    assert smaller.training.buffer_size == 1000
    with pytest.raises(config_lib.ConfigError, match="--shuffle_buffer changes nothing "
                                                     "without --data_order=shuffle_buffer"):
        presets.resolve({"preset": "mnist_improved_gan", "shuffle_buffer": 1000})
    with pytest.raises(config_lib.ConfigError, match="--shuffle_buffer must be positive"):
        presets.resolve({"preset": "mnist_blog", "shuffle_buffer": 0})
    assert not any(deviation.aspect == "data order"
                   for deviation in presets.get_preset("mnist_blog").deviations)


def test_the_unlabeled_pool_outside_the_labeled_set_is_refused_where_it_cannot_be():
    """A masked batch is drawn from the whole split, and --labels=all leaves
    no unlabeled image: one line each, before any data is read; a baseline
    (which draws no unlabeled batch) takes either."""
    with pytest.raises(config_lib.ConfigError, match="unlabeled_only needs --label_batching="):
        presets.resolve({"preset": "svhn_dcgan", "unlabeled_pool": "unlabeled_only"})
    with pytest.raises(config_lib.ConfigError, match="leaves no unlabeled image with --labels"):
        presets.resolve({"preset": "mnist_gans_in_action", "labels": "all"})
    baseline = presets.resolve({"preset": "mnist_gans_in_action", "labels": "all",
                                "supervised_only": True})
    assert baseline.data.unlabeled_pool == "unlabeled_only"


@pytest.mark.parametrize("field, preset, now, before, always", [
    ("ema_rule", "mnist_improved_gan", "improved_gan", "tensorflow", {"preset": "svhn_lecouat"}),
    ("conv_padding", "svhn_improved_gan", "half", "same", {"preset": "svhn_lecouat"}),
    ("pixel_scale", "mnist_improved_gan", "256", "255", {"preset": "svhn_lecouat"}),
    ("data_order", "svhn_improved_gan", "per_epoch", "joined",
     {"preset": "mnist_blog", "procedure": "unified"}),
    ("unlabeled_pool", "mnist_gans_in_action", "unlabeled_only", "all", {"preset": "mnist_blog"}),
    ("test_fraction", "svhn_dcgan", 0.5, 1.0, {"preset": "mnist_blog"}),
])
def test_a_run_from_before_an_option_resumes_only_with_what_it_trained_with(field, preset,
                                                                            now, before,
                                                                            always):
    """Runs recorded before ``ema_rule`` existed averaged D's weights by
    TensorFlow's rule, and before ``conv_padding`` padded as Keras, whatever
    their preset now says: their flags.json, without the field, reads as that
    value, so resuming one of the Improved-GAN presets (now their source's)
    needs ``--ema_rule=tensorflow`` or ``--conv_padding=same``, and a saved
    model's configuration without it keeps what it trained with."""
    config = presets.get_preset(preset).config
    assert config.value(field) == now
    older = {k: v for k, v in config.to_dict().items() if k != field}
    assert trainer.changed_options(older, config) == [field]
    assert trainer.changed_options(older, config.replace(**{field: before})) == []
    assert config_lib.Config.from_dict(older).value(field) == before
    # A configuration that always had that value resumes as before.
    unchanged = presets.resolve(always)
    assert unchanged.value(field) == before
    assert trainer.changed_options(
        {k: v for k, v in unchanged.to_dict().items() if k != field}, unchanged) == []


def test_a_resume_takes_a_folder_dataset_by_the_directory_it_names(tmp_path, monkeypatch):
    """``folder:pets/`` (a shell's completion) and ``folder:/abs/pets`` were
    "other flags (--dataset)": the resume was refused and --overwrite offered."""
    (tmp_path / "pets").mkdir()
    (tmp_path / "cats").mkdir()
    monkeypatch.chdir(tmp_path)
    config = presets.resolve({"preset": "svhn_dcgan", "dataset": "folder:pets", "labels": 10})
    earlier = config.to_dict()
    for same in ("folder:pets/", f"folder:{tmp_path}/pets", "folder:./cats/../pets"):
        assert trainer.changed_options(earlier, config.replace(dataset=same)) == []
    assert trainer.changed_options(earlier, config.replace(dataset="folder:cats")) == ["dataset"]
    assert trainer.changed_options(earlier, config.replace(dataset="tfds:pets")) == ["dataset"]


def test_train_without_an_architecture_refuses_before_touching_its_directory(tmp_path):
    # Config()'s empty architecture is for networks given to SGAN(...) in code.
    config = Config().replace(output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="train.. needs config.model.architecture"):
        trainer.train(config)
    assert not (tmp_path / "run").exists()


def test_a_configuration_of_a_newer_version_is_refused_and_a_retired_field_dropped(
        monkeypatch):
    """A saved model's configuration with a field this version does not know
    was written by a newer sgan_keras: read here, its model would run without
    what that field chose. A field retired since (config.RETIRED_FIELDS) is
    read without it."""
    values = {**Config().to_dict(), "g_clip": 1.0}
    with pytest.raises(ConfigError, match=r"^this configuration was written by a newer "
                       r"sgan_keras: it has g_clip, which this version does not know; "
                       r"read it with that version$"):
        Config.from_dict(values)
    monkeypatch.setattr(config_lib, "RETIRED_FIELDS", frozenset({"g_clip"}))
    assert Config.from_dict(values) == Config()


def test_numpy_numbers_are_kept_as_pythons_so_the_config_is_json():
    """A seed or label count from an array (np.int64) was kept as NumPy's:
    flags.json's json.dumps raised TypeError (a traceback) in trainer.train."""
    config = presets.get_preset("mnist_gans_in_action").config.replace(
        seed=np.int64(3), labels=np.int64(20), epochs=np.uint8(2), g_lr=np.float32(0.5),
        ema_decay=np.float64(0.25))
    values = json.loads(json.dumps(config.to_dict()))
    assert (values["seed"], values["labels"], values["epochs"], values["g_lr"]) == (3, 20, 2, 0.5)
    assert [type(config.value(name)) for name in ("seed", "labels", "epochs", "g_lr")] == [
        int, int, int, float]
    assert Config.from_dict(values) == config


@pytest.mark.parametrize("value, expected", [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (-2, True),
    (True, False), (np.True_, False), (2.0, False), (np.float32(2), False),
    ("2", False), (None, False)])
def test_is_integer_takes_numpy_integers_and_refuses_bools_floats_and_strings(value, expected):
    """The one integer test every argument check uses (config, data, layers,
    networks, SampleGrid): ``labels.max() + 1`` passes, a bool does not."""
    assert is_integer(value) is expected


def test_run_names_say_a_boolean_option_that_is_on():
    """A boolean option off in the preset names the run by its flag when on."""
    config = presets.resolve({"preset": "mnist_blog", "deterministic": True})
    assert presets.run_name(config) == "mnist_mnist_blog_labels4000_deterministic_seed0"
