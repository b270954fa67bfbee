"""Where pixels come from: identifiers resolved under the root (`local`), the libvips pyramid reader
(`pyramid`), the pure TIFF directory reader (`tiff`) and stored-tile pass-through (`passthrough`)."""
