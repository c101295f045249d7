//! Topic name and topic filter rules.
