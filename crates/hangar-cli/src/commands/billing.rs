//! `hangar billing [--org ORG] [--month YYYY-MM] [-a APP] [--json]`: what an org used
//! in a month (this one by default) and what it costs at the server's prices — machine
//! time by size, dedicated IPv4 addresses, volumes, bytes out through the proxy.

use anyhow::Result;
use clap::Args;
use hangar_types::billing::UsageLine;

use crate::{config, output};

#[derive(Args)]
pub struct BillingArgs {
    #[arg(short = 'o', long, default_value = "personal")]
    pub org: String,
    /// The month, YYYY-MM (default: this month)
    #[arg(long)]
    pub month: Option<String>,
    /// Only this app
    #[arg(short = 'a', long = "app")]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// A quantity in its unit, as a person reads it.
fn quantity(l: &UsageLine) -> String {
    match l.unit.as_str() {
        "seconds" => {
            let s = l.quantity.round() as u64;
            let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
            if h > 0 {
                format!("{h}h{m:02}m{s:02}s")
            } else if m > 0 {
                format!("{m}m{s:02}s")
            } else {
                format!("{:.1}s", l.quantity)
            }
        }
        "bytes" => {
            let b = l.quantity;
            if b >= 1e9 {
                format!("{:.2} GB", b / 1e9)
            } else if b >= 1e6 {
                format!("{:.2} MB", b / 1e6)
            } else if b >= 1e3 {
                format!("{:.1} kB", b / 1e3)
            } else {
                format!("{b:.0} B")
            }
        }
        "gb-seconds" => format!("{:.2} GB-days", l.quantity / 86_400.0),
        other => format!("{} {other}", l.quantity),
    }
}

/// What a line is: the item, with a machine's size and state.
fn what(l: &UsageLine) -> String {
    match (&l.size, l.memory_mb, &l.state) {
        (Some(size), Some(mb), Some(state)) => format!("machine {size} {mb}MB, {state}"),
        _ => match l.item.as_str() {
            "ipv4" => "dedicated IPv4".into(),
            "egress" => "data out".into(),
            "volume" => "volume".into(),
            other => other.into(),
        },
    }
}

pub async fn run(args: BillingArgs) -> Result<()> {
    let report = config::client()?
        .billing(&args.org, args.month.as_deref(), args.app.as_deref())
        .await?;
    if args.json {
        return output::json(&report);
    }
    println!(
        "Usage of {} in {} (through {}), in {}",
        report.org, report.month, report.through, report.currency
    );
    let mut rows: Vec<Vec<String>> = report
        .lines
        .iter()
        .map(|l| {
            vec![
                l.app.clone(),
                what(l),
                quantity(l),
                format!("{:.4}", l.cost),
            ]
        })
        .collect();
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        String::new(),
        format!("{:.4}", report.total),
    ]);
    output::table(&["APP", "ITEM", "USED", "COST"], &rows);
    Ok(())
}
