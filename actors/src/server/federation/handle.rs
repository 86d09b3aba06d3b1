//! The federation actor's door: commands through the bounded aggregate handle, reads from the
//! view it publishes (no round trip to the actor).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Federation, FederationCommand, FederationError, FederationReply, FederationView};
use crate::server::aggregate_actor::{AggregateHandle, CommandError};

/// Commands to the federation aggregate, and its published view.
#[derive(Clone, Debug)]
pub struct FederationHandle {
    aggregate: AggregateHandle<Federation>,
    view: watch::Receiver<Arc<FederationView>>,
}

impl FederationHandle {
    /// Over a spawned actor and the receiver of the view it publishes.
    pub fn new(
        aggregate: AggregateHandle<Federation>,
        view: watch::Receiver<Arc<FederationView>>,
    ) -> Self {
        Self { aggregate, view }
    }

    /// Sends a command and waits for its durable outcome.
    pub async fn command(
        &self,
        command: FederationCommand,
    ) -> Result<FederationReply, CommandError<FederationError>> {
        self.aggregate.command(command).await
    }

    /// Relationships and federated bundles as last folded.
    pub fn view(&self) -> Arc<FederationView> {
        self.view.borrow().clone()
    }

    /// Follows the view: changes after every federation event.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FederationView>> {
        self.view.clone()
    }

    /// The underlying aggregate handle (in-flight counts, reads).
    pub fn aggregate(&self) -> &AggregateHandle<Federation> {
        &self.aggregate
    }
}
