//! Three `serve` replicas on one Postgres primary and its streaming read replica, behind HAProxy
//! on loopback with compose.yaml's proxy configuration: the rate limits and network caps see
//! each client's own address through the proxy, and under load one replica and then the
//! detector leader die by `kill -9` without a report lost or stored twice, an incident missed or
//! opened twice, or a surviving event stream going without it. `scripts/scale-out` runs the
//! longer form with more clients and reports and prints its figures.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod load;
mod topology;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::X_IN_PAKISTAN;
use load::{load_client, stored, Plan, Sent, Surges};
use outagewatch::detect::SeriesKey;
use outagewatch::domain::buckets::minute_of;
use outagewatch::runtime::clock;
use outagewatch::store::IncidentQuery;
use outagewatch_scenario::Scenario;
use serde_json::{json, Value};
use tokio::sync::watch;
use topology::{client_at, instant_at, wait_for_room_in_minute, Ears, Event, Topology, REPLICAS};
use uuid::Uuid;

/// Sends `n` reports of `reddit` in the US from `client` to `url`, each from a reporter of its
/// own (user agent) and with a forged `X-Forwarded-For` entry in a /24 of its own; whether each
/// was counted.
async fn counted(client: &reqwest::Client, url: &str, who: &str, n: usize) -> Vec<bool> {
    let mut outcomes = Vec::new();
    for i in 0..n {
        let response = client
            .post(url)
            .header("user-agent", format!("{who} reporter {i}"))
            .header("x-forwarded-for", format!("198.51.{i}.7"))
            .json(&json!({"service": "reddit", "country": "US", "problem": "app"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{who}'s report {i}");
        let receipt: Value = response.json().await.unwrap();
        outcomes.push(receipt["counted"].as_bool().unwrap());
    }
    outcomes
}

const FIVE_OF_SEVEN: [bool; 7] = [true, true, true, true, true, false, false];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_proxy_each_client_is_capped_and_limited_by_its_own_address_not_a_forged_one() {
    // One request a minute, 10 at once: a client's bucket on each replica holds 10 and none
    // refills while the test runs. Reads are computed afresh, so each says where it was read.
    let mut topology = Topology::start(
        &[
            ("OUTAGEWATCH__RATE_LIMIT__PER_IP_PER_MINUTE", "1"),
            ("OUTAGEWATCH__RATE_LIMIT__BURST", "10"),
            ("OUTAGEWATCH__HTTP__READ_CACHE_SECONDS", "0"),
        ],
        None,
    )
    .await;
    wait_for_room_in_minute(Duration::from_secs(15)).await;
    let reports = topology.proxy_url("/api/v1/reports");

    // Network caps (5 counted reports per /24 per service per minute) through the proxy: each
    // client's own /24 counts, whatever it forges to the left of the proxy's entry.
    let first = client_at(Ipv4Addr::new(127, 201, 1, 1));
    let second = client_at(Ipv4Addr::new(127, 202, 1, 1));
    let neighbour = client_at(Ipv4Addr::new(127, 201, 1, 2));
    assert_eq!(counted(&first, &reports, "first", 7).await, FIVE_OF_SEVEN);
    assert_eq!(counted(&second, &reports, "second", 7).await, FIVE_OF_SEVEN);
    assert_eq!(
        counted(&neighbour, &reports, "neighbour", 3).await,
        [false; 3]
    );
    // Straight to a replica, not from the proxy: the forged header is not believed either.
    let direct = client_at(Ipv4Addr::new(127, 203, 1, 1));
    let replica = topology.url(0, "/api/v1/reports");
    assert_eq!(counted(&direct, &replica, "direct", 7).await, FIVE_OF_SEVEN);

    // Rate limits: each replica keeps its own bucket per client address, and the proxy takes
    // turns, so a client has a bucket of 10 on each replica; its 31st request in a row is the
    // first refused.
    let greedy = client_at(Ipv4Addr::new(127, 204, 1, 1));
    let report = json!({"service": "reddit", "country": "GB", "problem": "app"});
    let mut answers = Vec::new();
    for _ in 0..10 * REPLICAS + 1 {
        let response = greedy.post(&reports).json(&report).send().await.unwrap();
        let retry_after = response.headers().contains_key("retry-after");
        answers.push((response.status().as_u16(), retry_after));
    }
    let mut expected = vec![(201, false); 10 * REPLICAS];
    expected.push((429, true));
    assert_eq!(answers, expected);
    // The next client's own buckets are full.
    let next = client_at(Ipv4Addr::new(127, 205, 1, 1));
    for _ in 0..REPLICAS {
        let response = next.post(&reports).json(&report).send().await.unwrap();
        assert_eq!(response.status(), 201);
    }

    // Reads through the proxy come from the read replica, marked with its data's age, on every
    // service replica (once each has measured the replica's lag).
    let reader = reqwest::Client::new();
    let counts = topology.proxy_url("/api/v1/counts?service=reddit&country=US&interval=1h");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut marked_in_a_row = 0;
    while marked_in_a_row < 3 {
        let response = reader.get(&counts).send().await.unwrap();
        assert_eq!(response.status(), 200);
        if response.headers().contains_key("x-data-age") {
            marked_in_a_row += 1;
        } else {
            marked_in_a_row = 0;
            assert!(
                Instant::now() < deadline,
                "reads never came from the replica"
            );
            let soon = Instant::now() + Duration::from_millis(100);
            topology.ears.listen_until(soon).await;
        }
    }
}

/// Two days of ordinary reports up to the current minute of X in Pakistan and YouTube in
/// Britain, the two series the surges hit: more than the detector's warm-up (a day).
fn history(now: DateTime<Utc>) -> Scenario {
    let end = minute_of(now);
    let start = end - TimeDelta::days(2);
    Scenario::from_toml(&format!(
        r#"
name = "scale-out history"
start = "{start}"
end = "{end}"
seed = 17

[problems]
app = 1.0

{X_IN_PAKISTAN}
[[traffic]]
service = "youtube"
country = "GB"
per_minute = 1.0
diurnal_amplitude = 0.3
peak_hour_utc = 19
dispersion = 0.05
"#,
        start = start.to_rfc3339(),
        end = end.to_rfc3339(),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_load_lose_no_report_and_hand_over_the_detector_when_killed() {
    let plan = Arc::new(Plan::from_env());
    let k = plan.open_after_minutes;
    let minutes = TimeDelta::minutes;
    let open_after = k.to_string();
    let mut topology = Topology::start(
        &[(
            "OUTAGEWATCH__DETECTOR__MODEL__OPEN_AFTER_MINUTES",
            &open_after,
        )],
        Some(&history(clock::now())),
    )
    .await;
    let settle = TimeDelta::seconds(topology.settings().detector.settle_seconds as i64);
    topology
        .ears
        .wait_for(Duration::from_secs(60), "a detector leader", Ears::leader)
        .await;
    topology
        .wait_until_caught_up(Duration::from_secs(120))
        .await;
    let all = IncidentQuery {
        limit: 1000,
        ..IncidentQuery::default()
    };
    assert_eq!(topology.store.incidents(&all).await.unwrap(), []);
    // An event stream on every replica.
    for replica in 0..REPLICAS {
        let url = topology.url(replica, "/api/v1/events");
        topology.ears.open_stream(&url, replica).await.unwrap();
    }

    // Surge A (X in Pakistan) from minute m1, in every request of every client: each client's
    // /24 adds 5 counted reports a minute. Surge B (YouTube in Britain) from minute m1 + 1.
    wait_for_room_in_minute(Duration::from_secs(15)).await;
    let m1 = minute_of(clock::now());
    let surges = Arc::new(Surges::default());
    surges.a.store(true, Ordering::SeqCst);
    let b_from = instant_at(m1 + minutes(1)) + Duration::from_millis(500);
    tokio::spawn({
        let surges = surges.clone();
        async move {
            tokio::time::sleep_until(b_from.into()).await;
            surges.b.store(true, Ordering::SeqCst);
        }
    });
    let started = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let clients: Vec<_> = (0..plan.clients)
        .map(|index| {
            tokio::spawn(load_client(
                index,
                plan.clone(),
                topology.proxy_url("/api/v1/reports"),
                surges.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    // Ten seconds in, kill -9 a replica that is not the leader; the load goes on.
    topology
        .ears
        .listen_until(started + Duration::from_secs(10))
        .await;
    let (leader, _) = topology.ears.leader().unwrap();
    let ordinary = (0..REPLICAS).find(|&r| r != leader).unwrap();
    let ordinary_killed = topology.kill(ordinary).await;

    // The leader opens A's incident after its k-th surging minute; two seconds after it has
    // announced that minute (the opening, then the minute's counts), kill -9 the leader: the next
    // minute is due 58 s later (the worst moment is just after a processed minute). B has had
    // k - 1 minutes processed by then.
    let (last_old, announced) = topology
        .ears
        .wait_for(
            Duration::from_secs(60 * k as u64 + 90),
            "the opening of X's incident in Pakistan and its minute's counts",
            |ears| {
                let opened = ears.events.iter().find(|e| e.opens("x", "PK"))?;
                let minute: DateTime<Utc> = opened.data["incident"]["detected_at"]
                    .as_str()?
                    .parse()
                    .ok()?;
                let counts = ears
                    .events
                    .iter()
                    .find(|e| e.minute_of_x() == Some(minute))?;
                Some((minute, opened.at.max(counts.at)))
            },
        )
        .await;
    topology
        .ears
        .listen_until(announced + Duration::from_secs(2))
        .await;
    let heard_last = topology
        .ears
        .events
        .iter()
        .filter_map(Event::minute_of_x)
        .max();
    assert_eq!(heard_last, Some(last_old), "no minute after the opening's");
    let (old_leader, _) = topology.ears.leader().unwrap();
    assert_eq!(old_leader, leader, "one leader until it was killed");
    let killed_at = topology.kill(leader).await;
    let survivor = (0..REPLICAS)
        .find(|&r| r != leader && r != ordinary)
        .unwrap();
    // A client of the proxy reconnects, as EventSource does, and lands on the survivor.
    let proxy_stream = REPLICAS;
    let deadline = Instant::now() + Duration::from_secs(20);
    let events_url = topology.proxy_url("/api/v1/events");
    while let Err(error) = topology.ears.open_stream(&events_url, proxy_stream).await {
        assert!(
            Instant::now() < deadline,
            "the proxy's event stream: {error}"
        );
        let soon = Instant::now() + Duration::from_millis(200);
        topology.ears.listen_until(soon).await;
    }

    // The survivor takes over and processes the next minute; the new leader opens B's incident.
    let (first_new, first_new_at, first_new_wall) = topology
        .ears
        .wait_for(
            Duration::from_secs(120),
            "a minute processed after the leader's kill",
            |ears| {
                ears.events
                    .iter()
                    .filter(|e| e.stream == survivor && e.at > killed_at)
                    .find_map(|e| {
                        let minute = e.minute_of_x().filter(|&m| m > last_old)?;
                        Some((minute, e.at, e.wall))
                    })
            },
        )
        .await;
    topology
        .ears
        .wait_for(
            Duration::from_secs(30),
            "the opening of YouTube's incident in Britain on the survivor and through the proxy",
            |ears| {
                let heard_on = |stream| {
                    ears.events
                        .iter()
                        .any(|e| e.stream == stream && e.opens("youtube", "GB"))
                };
                (heard_on(survivor) && heard_on(proxy_stream)).then_some(())
            },
        )
        .await;
    let (new_leader, took_over_at) = topology.ears.leader().unwrap();
    let tail_until = Instant::now() + Duration::from_secs(plan.tail_seconds);
    topology.ears.listen_until(tail_until).await;

    stop.send(true).unwrap();
    let mut sent = Sent::default();
    for client in clients {
        let client = client.await.unwrap();
        sent.acknowledged.extend(client.acknowledged);
        sent.requests += client.requests;
        sent.abandoned += client.abandoned;
        for (failure, n) in client.retried {
            *sent.retried.entry(failure).or_default() += n;
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    // The detector stops where it is, for the comparison below.
    topology.kill(survivor).await;

    let acknowledged = sent.acknowledged.len();
    let distinct: HashSet<Uuid> = sent.acknowledged.iter().copied().collect();
    let stored = stored(&topology.db.url, &sent.acknowledged).await;
    let settings = topology.settings();
    let watermark = topology
        .store
        .checkpoint()
        .await
        .unwrap()
        .unwrap()
        .watermark;
    let first = topology.store.first_rollup_minute().await.unwrap().unwrap();
    let core_opens = common::opened_minutes(
        &topology.store,
        &settings.detector.model,
        first,
        watermark + minutes(1),
    )
    .await;
    let incidents = topology.store.incidents(&all).await.unwrap();
    let stored_opens: BTreeMap<(SeriesKey, DateTime<Utc>), DateTime<Utc>> = incidents
        .iter()
        .map(|i| {
            let key = SeriesKey {
                service: i.service.clone(),
                country: i.country.clone(),
                city: i.city.clone(),
            };
            ((key, i.started_at), i.detected_at)
        })
        .collect();
    let of = |service: &str, country: &str| {
        incidents
            .iter()
            .filter(|i| {
                i.service == service && i.country.as_deref() == Some(country) && i.city.is_none()
            })
            .map(|i| (i.started_at, i.detected_at))
            .collect::<Vec<_>>()
    };
    let x_survivor_minutes: Vec<DateTime<Utc>> = topology
        .ears
        .events
        .iter()
        .filter(|e| e.stream == survivor)
        .filter_map(Event::minute_of_x)
        .collect();
    let opened_on = |stream: usize, service: &str, country: &str| {
        topology
            .ears
            .events
            .iter()
            .any(|e| e.stream == stream && e.opens(service, country))
    };
    let name = |replica: usize| format!("app{}", replica + 1);
    let failover = first_new_at - killed_at;
    let due = first_new + minutes(1) + settle;

    eprintln!("scale-out figures ({plan:?}):");
    eprintln!(
        "  reports: {acknowledged} acknowledged ({} requests), {} stored besides {} of history, \
         {} stored twice, {} lost; {} counted = {} in the minute counts",
        sent.requests - sent.retried.values().sum::<u64>(),
        stored.rows - stored.not_acknowledged,
        stored.not_acknowledged,
        stored.rows - stored.distinct_ids,
        stored.lost,
        stored.counted,
        stored.rolled_up
    );
    eprintln!(
        "  through the proxy: {:.0} reports/s acknowledged over {load_seconds:.0} s; answers \
         sent again: {:?}; given up: {}",
        acknowledged as f64 / load_seconds,
        sent.retried,
        sent.abandoned
    );
    eprintln!(
        "  kill -9 of {} (not the leader) {:.1} s into the load, of {} (the leader) {:.1} s \
         after it announced minute {last_old}",
        name(ordinary),
        (ordinary_killed - started).as_secs_f64(),
        name(leader),
        (killed_at - announced).as_secs_f64()
    );
    eprintln!(
        "  failover: {} led {:.1} s after the kill; its first processed minute, {first_new}, \
         announced {:.1} s after the kill ({:.2} s after it was due)",
        name(new_leader),
        (took_over_at - killed_at).as_secs_f64(),
        failover.as_secs_f64(),
        (first_new_wall - due).as_seconds_f64()
    );
    eprintln!(
        "  incidents: X in PK {:?}, YouTube in GB {:?} (started, detected); {} stored, the \
         detector core's over the stored counts: {}",
        of("x", "PK"),
        of("youtube", "GB"),
        incidents.len(),
        core_opens.len()
    );
    for stream in 0..=REPLICAS {
        let label = match stream {
            REPLICAS => "the proxy (connected after the leader's kill)".to_owned(),
            r if r == ordinary => format!("{} (killed first)", name(r)),
            r if r == leader => format!("{} (the leader, killed second)", name(r)),
            r => format!("{} (survivor)", name(r)),
        };
        eprintln!(
            "  SSE on {label}: X/PK opened {}, YouTube/GB opened {}",
            opened_on(stream, "x", "PK"),
            opened_on(stream, "youtube", "GB")
        );
    }

    // Every acknowledged report is stored once; nothing else is stored but the history.
    assert_eq!(distinct.len(), acknowledged, "an id acknowledged twice");
    assert_eq!(sent.abandoned, 0);
    let rows = (topology.seeded + acknowledged) as i64;
    assert_eq!(
        (
            stored.rows,
            stored.distinct_ids,
            stored.lost,
            stored.not_acknowledged
        ),
        (rows, rows, 0, topology.seeded as i64),
        "rows, distinct ids, acknowledged ids lost, rows not acknowledged"
    );
    assert_eq!(
        stored.counted, stored.rolled_up,
        "counted reports, minute counts"
    );
    // Each client has its own rate: none was refused for it.
    assert_eq!(sent.retried.get("429"), None);

    // The leader announced A's opening in minute m1 + k - 1 and was killed before the next
    // minute; the survivor took over and processed that next minute first, within 60 s of the
    // kill, and its stream heard every minute once, across the failover.
    assert_eq!(last_old, m1 + minutes(k - 1));
    assert_eq!(first_new, last_old + minutes(1));
    assert_ne!(new_leader, leader);
    assert_eq!(new_leader, survivor);
    assert!(failover <= Duration::from_secs(60), "failover {failover:?}");
    assert!(
        x_survivor_minutes.len() > k as usize,
        "{x_survivor_minutes:?}"
    );
    for pair in x_survivor_minutes.windows(2) {
        assert_eq!(pair[1], pair[0] + minutes(1), "{x_survivor_minutes:?}");
    }

    // One incident for each surge: A opened by the old leader from its first minute, B by the new
    // one from its first; the incidents stored are those the detector core opens over the
    // stored counts, in one pass and with no failover.
    assert_eq!(of("x", "PK"), [(m1, m1 + minutes(k - 1))]);
    assert_eq!(of("youtube", "GB"), [(m1 + minutes(1), m1 + minutes(k))]);
    assert_eq!(stored_opens.len(), incidents.len());
    assert_eq!(stored_opens, core_opens);

    // Every stream whose replica was up when an incident opened got it.
    for replica in 0..REPLICAS {
        assert_eq!(
            opened_on(replica, "x", "PK"),
            replica != ordinary,
            "{}",
            name(replica)
        );
        assert_eq!(
            opened_on(replica, "youtube", "GB"),
            replica == survivor,
            "{}",
            name(replica)
        );
    }
    assert!(opened_on(proxy_stream, "youtube", "GB"));
}
