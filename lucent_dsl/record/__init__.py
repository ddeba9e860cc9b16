"""The record a file carries, as data, below the renderer.

Rooms: `recipe` (`Recipe`: everything that decides a render's pixels, its JSON, loading and validation),
`trust` (what a recipe read from a file may ask for), `resources` (caps, memory and threads a render may
use, checked before the first step), `resume` (the state an interrupted pass resumes from, keyed by what made
it). Running a recipe sits above the renderer: `lucent_dsl.replay`.

Example:
    >>> from lucent_dsl.record.recipe import Recipe
    >>> r = Recipe(objective="channel('0', 1)", steps=8)
    >>> Recipe.from_json(r.to_json()).steps
    8
"""
