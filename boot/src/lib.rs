//! Boot image builder.
