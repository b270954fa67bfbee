"""Pages above the protocols: the HTML index (`index`), the viewer pages (`viewers`, from `templates/`)
and the IIIF Presentation manifests and collections (`manifests`). They link to protocol URLs; nothing
below imports them."""
