//! Supervised learning: the dataset a model sees (`dataset`), the model families (`models`),
//! and the `train` stage.

pub mod dataset;
pub mod fold_window;
pub mod lightgbm;
pub mod logistic;
pub mod mlp;
pub mod models;
pub mod portable;
pub mod scorer;
pub mod sequence;
pub mod train;
