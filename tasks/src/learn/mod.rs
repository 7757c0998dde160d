//! Supervised learning: the dataset a model sees (`dataset`), the model families (`models`),
//! and the `train` stage.

pub mod dataset;
pub mod models;
pub mod train;
