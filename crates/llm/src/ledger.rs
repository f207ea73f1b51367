//! The cost ledger: tokens per role and model, priced by an optional table, and a budget that
//! stops calls cleanly before it would be passed.
//!
//! The ledger wraps the *backend* (inside the cache), so cache hits cost nothing and a rerun
//! after a budget stop continues where it left off: everything already answered is a hit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{BackendIdentity, ChatModel, ChatRequest, ChatResponse, LlmError, TokenSink};

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input + completion_tokens as f64 * self.output) / 1e6
    }
}

/// Prices by model id. Models without a price cost nothing (local models).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub HashMap<String, Price>);

impl PriceTable {
    pub fn price(&self, model: &str) -> Option<Price> {
        self.0.get(model).copied()
    }
}

/// What one (role, model) pair has used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerSnapshot {
    /// `role -> model -> tally`.
    pub by_role: BTreeMap<String, BTreeMap<String, Tally>>,
    pub total_cost_usd: f64,
    pub budget_usd: Option<f64>,
}

#[derive(Debug, Default)]
struct LedgerState {
    tallies: BTreeMap<(String, String), Tally>,
    spent_usd: f64,
    /// Cost reserved by calls in flight, so concurrent calls cannot jointly overshoot.
    reserved_usd: f64,
}

/// Shared by all roles of a process.
#[derive(Debug, Default)]
pub struct Ledger {
    prices: PriceTable,
    budget_usd: Option<f64>,
    state: Mutex<LedgerState>,
}

/// A rough token estimate for budgeting before a call (about four characters a token).
fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let chars: usize = req.messages.iter().map(|m| m.content.len() + 8).sum();
    (chars as u64).div_ceil(4)
}

impl Ledger {
    pub fn new(prices: PriceTable, budget_usd: Option<f64>) -> Self {
        Self {
            prices,
            budget_usd,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves the worst-case cost of a call, or refuses if it could pass the budget.
    fn reserve(&self, model: &str, req: &ChatRequest) -> Result<f64, LlmError> {
        let Some(price) = self.prices.price(model) else {
            return Ok(0.0);
        };
        let worst = price.cost(
            estimate_prompt_tokens(req),
            u64::from(req.sampling.max_tokens),
        );
        let mut state = self.lock();
        if let Some(budget) = self.budget_usd {
            let committed = state.spent_usd + state.reserved_usd;
            if committed + worst > budget {
                return Err(LlmError::BudgetExceeded {
                    budget_usd: budget,
                    spent_usd: state.spent_usd,
                    next_usd: worst,
                });
            }
        }
        state.reserved_usd += worst;
        Ok(worst)
    }

    fn settle(&self, role: &str, model: &str, reserved: f64, resp: Option<&ChatResponse>) {
        let mut state = self.lock();
        state.reserved_usd = (state.reserved_usd - reserved).max(0.0);
        let Some(resp) = resp else { return };
        let cost = self
            .prices
            .price(model)
            .map(|p| p.cost(resp.usage.prompt_tokens, resp.usage.completion_tokens))
            .unwrap_or(0.0);
        state.spent_usd += cost;
        let tally = state
            .tallies
            .entry((role.to_owned(), model.to_owned()))
            .or_default();
        tally.calls += 1;
        tally.prompt_tokens += resp.usage.prompt_tokens;
        tally.completion_tokens += resp.usage.completion_tokens;
        tally.cost_usd += cost;
    }

    pub fn snapshot(&self) -> LedgerSnapshot {
        let state = self.lock();
        let mut by_role: BTreeMap<String, BTreeMap<String, Tally>> = BTreeMap::new();
        for ((role, model), tally) in &state.tallies {
            by_role
                .entry(role.clone())
                .or_default()
                .insert(model.clone(), tally.clone());
        }
        LedgerSnapshot {
            by_role,
            total_cost_usd: state.spent_usd,
            budget_usd: self.budget_usd,
        }
    }
}

/// A backend whose calls are counted (and priced, and budgeted) under a role name.
pub struct MeteredModel {
    inner: Arc<dyn ChatModel>,
    role: String,
    ledger: Arc<Ledger>,
}

impl MeteredModel {
    pub fn new(inner: Arc<dyn ChatModel>, role: impl Into<String>, ledger: Arc<Ledger>) -> Self {
        Self {
            inner,
            role: role.into(),
            ledger,
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for MeteredModel {
    fn identity(&self) -> BackendIdentity {
        self.inner.identity()
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        stream: Option<TokenSink>,
    ) -> Result<ChatResponse, LlmError> {
        let model = self.inner.identity().model;
        let reserved = self.ledger.reserve(&model, req)?;
        let result = self.inner.chat(req, stream).await;
        self.ledger
            .settle(&self.role, &model, reserved, result.as_ref().ok());
        result
    }
}
