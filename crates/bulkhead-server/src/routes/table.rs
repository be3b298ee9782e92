//! The route table: each route is declared once, in its routes module, as
//! its handler (whose `#[utoipa::path]` annotation gives the method, the
//! path and the documentation), any layer of its own, and its plane.
//!
//! The axum router, the OpenAPI document's paths and the isolation
//! matrix's rows are all derived from this one table, so none of them can
//! name a route the others lack (utoipa-axum's `OpenApiRouter` keeps the
//! router and the paths together; the table adds the plane).

use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::state::AppState;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plane {
    /// No credential (health, metrics, the OpenAPI document).
    Public,
    /// A tenant's API key or JWT (the handler takes a `TenantCtx`).
    Tenant,
    /// The operator token (the handler takes an `OperatorCtx`).
    Operator,
}

impl Plane {
    /// The security scheme the route's annotation must name: the document
    /// tells clients which credential a route takes, so it has to agree
    /// with the plane (a test compares them).
    pub fn security_scheme(self) -> Option<&'static str> {
        match self {
            Plane::Public => None,
            Plane::Tenant => Some("bearer"),
            Plane::Operator => Some("operator"),
        }
    }
}

/// One route of the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The method in upper case (`GET`).
    pub method: &'static str,
    /// The path template, as in the router and the OpenAPI document
    /// (`/v1/runs/{id}`).
    pub path: String,
    /// Who may call it.
    pub plane: Plane,
}

/// Routes with their handlers, documentation and planes.
pub struct RouteTable {
    router: OpenApiRouter<AppState>,
    routes: Vec<Route>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            router: OpenApiRouter::new(),
            routes: Vec::new(),
        }
    }

    /// Adds routes that need no credential.
    pub fn public(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.add(Plane::Public, routes)
    }

    /// Adds tenant-plane routes.
    pub fn tenant(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.add(Plane::Tenant, routes)
    }

    /// Adds operator-plane routes.
    pub fn operator(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        self.add(Plane::Operator, routes)
    }

    fn add(mut self, plane: Plane, routes: UtoipaMethodRouter<AppState>) -> Self {
        for (path, item) in &routes.1.paths {
            for (method, _) in operations(item) {
                self.routes.push(Route {
                    method,
                    path: path.clone(),
                    plane,
                });
            }
        }
        self.router = self.router.routes(routes);
        self
    }

    /// Adds another table's routes (one table per routes module).
    pub fn merge(mut self, other: RouteTable) -> Self {
        self.router = self.router.merge(other.router);
        self.routes.extend(other.routes);
        self
    }

    /// Every route, in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The router (without the application-wide layers) and the paths of
    /// the OpenAPI document.
    pub fn split(self) -> (Router<AppState>, OpenApi) {
        self.router.split_for_parts()
    }
}

/// The operations of a path item with their methods in upper case.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}
