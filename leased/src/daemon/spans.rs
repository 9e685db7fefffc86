//! The lease span: every line about the identity the machine is on carries `identity`
//! (and `epoch` once known), so that one grep follows it; the span is a child of the
//! daemon's (`node`).

use shared::Name;

use super::Driver;

impl Driver {
    /// Keeps the lease span on the identity the machine is on: a new span when it moves
    /// to another identity, none while it seeks.
    pub(super) fn follow_identity(&mut self, identity: Option<&Name>) {
        match identity {
            Some(id) if self.lease_span.as_ref().is_some_and(|(on, _)| on == id) => {}
            Some(id) => {
                // A child of the daemon's span (entered on this thread), never of the lease
                // span that may be entered now.
                let span = tracing::info_span!(
                    parent: &self.node_span,
                    "lease",
                    identity = %id,
                    epoch = tracing::field::Empty
                );
                self.lease_span = Some((id.clone(), span));
            }
            None => self.lease_span = None,
        }
    }

    /// The span to log in: the lease's while the machine is on an identity.
    pub(super) fn span(&self) -> tracing::Span {
        self.lease_span
            .as_ref()
            .map_or_else(tracing::Span::none, |(_, span)| span.clone())
    }
}
