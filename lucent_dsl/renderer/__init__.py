"""Plan -> RenderResult: the render.

Rooms: `phases` (`render` in named phases: check the arguments, set up, run the steps, build the result),
`steps` (the loop, the non-finite policy, the compiled-step cache), `result` (`RenderResult`), `relu`
(Lucid's redirected ReLU), `provenance` (the `record.Recipe` of a Python render, or why there is none),
`rerun` (a render recipe rendered again: what `Recipe.run` and the atlas call),
`schedule` (learning-rate schedules, Adam's betas), `stopping` (early-stopping rules: `Plateau`, `Target`),
`coarse` (`coarse_to_fine`: render small, upsample, go on).
Named `renderer`, not `render`, so that `lucent_dsl.render` stays the function.

Example:
    >>> import lucent_dsl
    >>> lucent_dsl.render is render, render.__module__
    (True, 'lucent_dsl.renderer.phases')
"""
from .phases import render as render
from .result import RenderResult as RenderResult
