"""`resshift models export`: a Hub-ready copy of a model folder, with its `README.md` model card."""

from __future__ import annotations

import shutil
from pathlib import Path

from resshift_cli import registry
from resshift_cli.cache import check_new_folder, resolve_model
from resshift_cli.config import ModelConfig
from resshift_cli.errors import ModelError
from resshift_cli.fileio import staged_folder
from resshift_cli.loading import load_model
from resshift_cli.locations import disk_error
from resshift_cli.manifest import MODEL_FILES, Manifest, read_manifest, verify_folder, write_manifest
from resshift_cli.progress import ProgressCallback
from resshift_cli.registry import ModelEntry

LICENSE_LINK = "https://github.com/sczhou/CodeFormer/blob/master/LICENSE"
"""The S-Lab License 1.0 text the ResShift README links to."""

_CITATION = """@inproceedings{yue2023resshift,
  title={ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting},
  author={Yue, Zongsheng and Wang, Jianyi and Loy, Chen Change},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2023}
}"""


def export_model(spec: str, dest: Path, *, progress: ProgressCallback | None = None) -> Path:
    """Write a Hub-ready copy of a model (resolved like `--model`) into the new folder `dest`.

    The copy holds the three model files, a fresh `manifest.json` (keeping the recorded sources) and a
    `README.md` model card with license metadata and provenance hashes, ready for `hf upload`.
    """
    check_new_folder(dest)
    source = resolve_model(spec, progress=progress)
    previous = read_manifest(source)
    if previous is not None and (problems := verify_folder(source)):
        raise ModelError(f"{problems[0]}; remove and download the model again before exporting")
    config = load_model(source).config
    try:
        with staged_folder(dest) as staging:
            for filename in MODEL_FILES:
                shutil.copyfile(source / filename, staging / filename)
            manifest = write_manifest(staging, config.name, previous.sources if previous else ())
            (staging / "README.md").write_text(model_card(config, manifest), encoding="utf-8")
    except OSError as err:
        raise disk_error(err, dest) from None
    return dest


def _card_metadata(entry: ModelEntry | None) -> str:
    """The YAML front matter the Hub reads (license, library, task, tags)."""
    license_lines = (
        f"license: other\nlicense_name: s-lab-license-1.0\nlicense_link: {LICENSE_LINK}\n"
        if entry is not None
        else "license: other\nlicense_name: unknown\n"
    )
    tags = "\n".join(f"- {tag}" for tag in ("super-resolution", "resshift", "diffusion", "safetensors"))
    return (
        f"---\n{license_lines}library_name: resshift-cli\npipeline_tag: image-to-image\ntags:\n{tags}\n---\n"
    )


def _provenance_rows(manifest: Manifest) -> str:
    rows = [
        f"| source | `{s.file}` | {s.size} | `{s.sha256}` | {s.url or 'local file'} |"
        for s in manifest.sources
    ]
    rows += [f"| converted | `{f.file}` | {f.size} | `{f.sha256}` | |" for f in manifest.files]
    return "| role | file | bytes | sha256 | from |\n|---|---|---|---|---|\n" + "\n".join(rows)


def model_card(config: ModelConfig, manifest: Manifest) -> str:
    """The `README.md` of an exported model folder."""
    entry = registry.MODELS.get(config.name)
    about = entry.description if entry is not None else "A ResShift model folder."
    license_text = (
        f"{registry.LICENSE_NOTE}. Keep the copyright notice; see {LICENSE_LINK} and "
        "https://github.com/zsyOAOA/ResShift."
        if entry is not None
        else "Not recorded by resshift-cli: state the license of these weights here before sharing them."
    )
    diffusion = config.diffusion
    origin = " from the authors' pickled `.pth` release" if manifest.sources else ""
    return f"""{_card_metadata(entry)}
# ResShift {config.name}

{about}. ×{config.scale} super-resolution in {diffusion.steps} sampling steps (κ = {diffusion.kappa}).

These are the weights of ResShift (Zongsheng Yue, Jianyi Wang, Chen Change Loy; NeurIPS 2023) in the
resshift-cli model-folder layout: `config.json`, `unet.safetensors` and `autoencoder.safetensors` with the
official parameter names, written by {manifest.tool}{origin}. The tensors are unchanged; only the container
differs from a pickle (safetensors cannot run code when loaded).

## Use

```sh
pip install resshift-cli
resshift upscale photo.jpg --model hf://OWNER/NAME
```

## License

{license_text}

## Provenance

{_provenance_rows(manifest)}

## Citation

```bibtex
{_CITATION}
```
"""
