"""The model catalogue: per Kling model and gateway route, which options a submission may carry.

One table serves the client (every submission is checked against it before the POST) and the studio form
(its choices are built from it), so the two can never disagree. What the table says and where each fact
comes from is in docs/models.md: EZmodel's own pages (doc.ezmodel.cloud/en/kling/*), its gateway source
(``relay/channel/task/kling/adaptor.go``: the request structs, the price and duration checks, the model
list) and Kling's official API documentation. Where they disagree the gateway's code wins, because it is
what refuses (or silently drops) a field.

>>> from kling_widgets._catalogue import model_spec, models_for
>>> models_for("omni-video")
('kling-v3-omni', 'kling-v3', 'kling-video-o1')
>>> model_spec("kling-v3", "text2video").durations
('5', '10')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MIN_SHOTS", "MIN_SHOT_SECONDS", "MODELS", "ROUTES", "ROUTING_NAMES", "ModelSpec", "model_spec",
    "models_for",
]  # fmt: skip

#: The task routes a submission can go to (``POST /kling/v1/videos/{route}``), in the order the studio
#: offers them.
ROUTES = (
    "text2video", "image2video", "omni-video", "multi-image2video", "video-extend", "advanced-lip-sync",
    "motion-control", "avatar/image2video",
)  # fmt: skip

#: Multi-shot: at least this many shots, each at least this long (EZmodel's omni-video page).
MIN_SHOTS = 2
MIN_SHOT_SECONDS = 3
_RATIOS = ("16:9", "9:16", "1:1")
_LEGACY = ("5", "10")  # the gateway prices no other duration on these routes (docs/models.md)


def _seconds(low: int, high: int) -> tuple[str, ...]:
    return tuple(str(second) for second in range(low, high + 1))


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts on one route. Empty tuples mean the route has no such option.

    Attributes
    ----------
    model, route : str
        The ``model_name`` sent, and the route (`ROUTES`) it is sent to.
    durations : tuple of str
        Accepted ``duration`` values in seconds (sent as strings).
    modes : tuple of str
        Accepted ``mode`` values; the first is the default.
    aspect_ratios : tuple of str
    sound : bool
        Takes ``sound="on"`` (native audio; it raises the price).
    cfg_scale : bool
        Takes ``cfg_scale`` (Kling ignores it on v2.x and later models, so it is refused there).
    start_frame, end_frame : bool
        Takes a first frame (``image`` / ``image_list`` type ``first_frame``) and a last frame.
    reference_images : int
        How many images the route's image list may hold (0: none).
    max_shots : int
        Multi-shot: how many shots at most (0: no multi-shot). Shots last at least `MIN_SHOT_SECONDS`
        each and, together, one of `durations`.
    video_reference : bool
        Takes a reference video (omni-video ``video_list``, ``refer_type="feature"``).
    video_edit : bool
        Takes a video to edit (``refer_type="base"``); the result keeps that video's length.
    plain_durations : tuple of str
        Narrower durations for text-only or plain-reference-image generation, when the model has them
        (``kling-video-o1``: 5 or 10, while frames or a reference video allow 3 to 10).
    """

    model: str
    route: str
    durations: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    aspect_ratios: tuple[str, ...] = ()
    sound: bool = False
    cfg_scale: bool = False
    start_frame: bool = False
    end_frame: bool = False
    reference_images: int = 0
    max_shots: int = 0
    video_reference: bool = False
    video_edit: bool = False
    plain_durations: tuple[str, ...] = ()

    def check(self, option: str, value: str, within: str) -> str:
        """``value`` if the attribute ``within`` (e.g. ``"durations"``) holds it; else a `ValueError` that
        names the model and what it accepts, and the route that takes the value with this model if one does
        (``kling-v3`` at 7 s: omni-video)."""
        accepted: tuple[str, ...] = getattr(self, within)
        if value in accepted:
            return value
        elsewhere = [
            spec.route
            for spec in MODELS
            if spec.model == self.model and spec.route != self.route and value in getattr(spec, within)
        ]
        hint = f" ({self.model} takes {option}={value!r} on {', '.join(elsewhere)})" if elsewhere else ""
        raise ValueError(
            f"{self.model} on {self.route} does not take {option}={value!r}; "
            f"it accepts {_listed(accepted)}{hint}"
        )

    def require(self, feature: str, option: str | None = None) -> None:
        """Raise `ValueError` unless this model takes ``feature`` (an attribute, e.g. ``"sound"``), naming
        the models of this route that do. ``option`` is the argument's name, if it differs."""
        if getattr(self, feature):
            return
        others = [spec.model for spec in MODELS if spec.route == self.route and getattr(spec, feature)]
        offer = f"; models that do: {', '.join(others)}" if others else ""
        raise ValueError(f"{self.model} on {self.route} does not take {option or feature}{offer}")


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(map(repr, values)) if values else "none"


def _legacy(
    model: str,
    route: str,
    modes: tuple[str, ...] = ("std", "pro"),
    *,
    sound: bool = False,
    cfg_scale: bool = False,
    end_frame: bool = False,
) -> ModelSpec:
    return ModelSpec(
        model, route, _LEGACY, modes, _RATIOS, sound=sound, cfg_scale=cfg_scale,
        start_frame=route == "image2video", end_frame=end_frame,
    )  # fmt: skip


def _omni(
    model: str,
    durations: tuple[str, ...],
    *,
    sound: bool = False,
    max_shots: int = 0,
    video_edit: bool = False,
    plain_durations: tuple[str, ...] = (),
) -> ModelSpec:
    """An omni-video model: every one takes both frames, 7 reference images and a reference video."""
    return ModelSpec(
        model, "omni-video", durations, ("std", "pro"), _RATIOS, sound=sound, start_frame=True,
        end_frame=True, reference_images=7, max_shots=max_shots, video_reference=True,
        video_edit=video_edit, plain_durations=plain_durations,
    )  # fmt: skip


#: Every model the client knows, per route (docs/models.md, "The table").
MODELS: tuple[ModelSpec, ...] = (
    # text2video: the gateway's price check allows 5 or 10 s only, whatever Kling allows; cfg_scale is for
    # kling-v1.x only (Kling: "not supported by kling-v2.x models").
    _legacy("kling-v2-6", "text2video", sound=True),
    _legacy("kling-v3", "text2video", sound=True),
    _legacy("kling-v2-5-turbo", "text2video"),
    _legacy("kling-v2-1-master", "text2video", ("master",)),
    _legacy("kling-v2-master", "text2video", ("master",)),
    _legacy("kling-v1-6", "text2video", cfg_scale=True),
    _legacy("kling-v1", "text2video", cfg_scale=True),
    # image2video: also kling-v1-5 and kling-v2-1, which take no text-only task.
    _legacy("kling-v2-6", "image2video", sound=True, end_frame=True),
    _legacy("kling-v3", "image2video", sound=True, end_frame=True),
    _legacy("kling-v2-5-turbo", "image2video", end_frame=True),
    _legacy("kling-v2-1", "image2video", end_frame=True),
    _legacy("kling-v2-1-master", "image2video", ("master",)),
    _legacy("kling-v2-master", "image2video", ("master",)),
    _legacy("kling-v1-6", "image2video", cfg_scale=True, end_frame=True),
    _legacy("kling-v1-5", "image2video", cfg_scale=True, end_frame=True),
    _legacy("kling-v1", "image2video", cfg_scale=True, end_frame=True),
    # omni-video: the only route for 3-15 s, multi-shot, video references and editing.
    _omni("kling-v3-omni", _seconds(3, 15), sound=True, max_shots=6, video_edit=True),
    _omni("kling-v3", _seconds(3, 15), sound=True, max_shots=6, video_edit=True),
    _omni("kling-video-o1", _seconds(3, 10), plain_durations=_LEGACY),
    ModelSpec("kling-v1-6", "multi-image2video", _LEGACY, ("std", "pro"), _RATIOS, reference_images=4),
    # The next two take no model: the model and mode are the source video's. The name only routes the
    # request to the gateway's billing channel for the route.
    ModelSpec("kling-video-extend", "video-extend", cfg_scale=True),
    ModelSpec("kling-lip-sync", "advanced-lip-sync"),
    # These two have no model in their bodies either, but a mode. Motion control is Kling's v2.6 model, and
    # the gateway's own demo and billing tests route it as kling-v2-6; avatar has a billing name of its own
    # (docs/models.md, "Choices to know about").
    ModelSpec("kling-v2-6", "motion-control", modes=("std", "pro")),
    ModelSpec("kling-avatar", "avatar/image2video", modes=("std", "pro")),
)


#: The names the gateway routes and bills the model-less routes by (docs/models.md, "Choices to know
#: about"). They are not Kling models: Kling's own API is sent none of them.
ROUTING_NAMES = frozenset({"kling-video-extend", "kling-lip-sync", "kling-identify-face", "kling-avatar"})


def models_for(route: str) -> tuple[str, ...]:
    """The models a route takes, the default first.

    Raises
    ------
    ValueError
        ``route`` is not one of `ROUTES`.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
    return tuple(spec.model for spec in MODELS if spec.route == route)


def model_spec(model: str, route: str) -> ModelSpec:
    """What ``model`` accepts on ``route``.

    Raises
    ------
    TypeError
        ``model`` is not a string.
    ValueError
        The route is unknown, or does not take this model (the message lists the models it takes).
    """
    if not isinstance(model, str):
        raise TypeError(f"model_name must be a string, got {type(model).__name__}")
    models = models_for(route)
    name = model.strip()
    if not name:
        raise ValueError("model_name must not be blank")
    for spec in MODELS:
        if spec.model == name and spec.route == route:
            return spec
    elsewhere = [spec.route for spec in MODELS if spec.model == name]
    hint = f" ({name} is offered on {', '.join(elsewhere)})" if elsewhere else ""
    raise ValueError(f"{route} does not take model_name={name[:40]!r}{hint}; it takes {', '.join(models)}")
