"""The Label Studio format layer: label config, brush RLE codec, annotation <-> label map."""
