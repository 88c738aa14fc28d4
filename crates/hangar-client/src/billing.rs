//! Usage and prices: `/orgs/{org}/billing` and `/billing/prices`.

use hangar_types::billing::{BillingReport, PriceTable};
use reqwest::Method;

use crate::{Client, Result};

impl Client {
    /// The org's usage in `month` (`YYYY-MM`; this month when `None`), of one app or all.
    pub async fn billing(
        &self,
        org: &str,
        month: Option<&str>,
        app: Option<&str>,
    ) -> Result<BillingReport> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(m) = month {
            query.append_pair("month", m);
        }
        if let Some(a) = app {
            query.append_pair("app", a);
        }
        let query = query.finish();
        self.call(
            Method::GET,
            &format!("/orgs/{org}/billing?{query}"),
            Self::NONE,
            &[],
        )
        .await
    }

    /// The price table the server uses.
    pub async fn prices(&self) -> Result<PriceTable> {
        self.call(Method::GET, "/billing/prices", Self::NONE, &[])
            .await
    }
}
