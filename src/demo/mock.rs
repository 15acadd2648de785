//! librdkafka's in-process mock cluster, for the demo and the tests.
//!
//! It speaks the Kafka protocol on 127.0.0.1 ports, so separate processes can
//! use it. Transactions are not faithful there (see the README's testing notes).

use std::ffi::{CStr, CString};

use rdkafka::bindings as rd;

pub struct MockCluster {
    rk: *mut rd::rd_kafka_t,
    mc: *mut rd::rd_kafka_mock_cluster_t,
    bootstrap: String,
}

// The mock cluster's handle is used from test threads one call at a time.
unsafe impl Send for MockCluster {}
unsafe impl Sync for MockCluster {}

impl MockCluster {
    /// Starts `brokers` in-process brokers on 127.0.0.1 (other processes can connect).
    pub fn start(brokers: i32) -> Result<MockCluster, String> {
        unsafe {
            let conf = rd::rd_kafka_conf_new();
            let mut errstr = [0 as std::os::raw::c_char; 512];
            // This handle only hosts the cluster and connects nowhere: without
            // this, librdkafka warns that it has no bootstrap.servers.
            let (name, value) = (c"log_level", c"3");
            rd::rd_kafka_conf_set(
                conf,
                name.as_ptr(),
                value.as_ptr(),
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            let rk = rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_PRODUCER,
                conf,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if rk.is_null() {
                let reason = CStr::from_ptr(errstr.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                return Err(format!("cannot create the mock cluster's client: {reason}"));
            }
            let mc = rd::rd_kafka_mock_cluster_new(rk, brokers);
            if mc.is_null() {
                rd::rd_kafka_destroy(rk);
                return Err(format!("cannot start a mock cluster of {brokers} brokers"));
            }
            // Groups form at once instead of after librdkafka's default 3 s delay.
            rd::rd_kafka_mock_group_initial_rebalance_delay_ms(mc, 0);
            let bootstrap = CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(mc))
                .to_string_lossy()
                .into_owned();
            Ok(MockCluster { rk, mc, bootstrap })
        }
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        unsafe {
            rd::rd_kafka_mock_cluster_destroy(self.mc);
            rd::rd_kafka_destroy(self.rk);
        }
    }
}

impl MockCluster {
    /// `host:port,...` of the brokers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the admin API's CreateTopics is not served by the mock).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let topic = CString::new(name).map_err(|e| e.to_string())?;
        let err = unsafe { rd::rd_kafka_mock_topic_create(self.mc, topic.as_ptr(), partitions, 1) };
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(format!("cannot create topic {name}: {err:?}"))
        }
    }
}

/// Fault injection, for tests.
impl MockCluster {
    /// Takes broker `id` down (`-1`: every broker); it refuses connections until [`MockCluster::broker_up`].
    pub fn broker_down(&self, id: i32) -> Result<(), String> {
        let err = unsafe { rd::rd_kafka_mock_broker_set_down(self.mc, id) };
        Self::check(err, "broker down")
    }

    /// Brings broker `id` back (`-1`: every broker).
    pub fn broker_up(&self, id: i32) -> Result<(), String> {
        let err = unsafe { rd::rd_kafka_mock_broker_set_up(self.mc, id) };
        Self::check(err, "broker up")
    }

    /// The next requests of `api_key` (1 = Fetch, 8 = OffsetCommit, ...) fail with `errors`, in order.
    pub fn push_request_errors(&self, api_key: i16, errors: &[rd::rd_kafka_resp_err_t]) {
        unsafe {
            rd::rd_kafka_mock_push_request_errors_array(
                self.mc,
                api_key,
                errors.len(),
                errors.as_ptr(),
            )
        }
    }

    /// Drops the errors still queued for requests of `api_key`.
    pub fn clear_request_errors(&self, api_key: i16) {
        unsafe { rd::rd_kafka_mock_clear_request_errors(self.mc, api_key) }
    }

    /// Makes broker `id` advertise `host:port` instead of its own listener
    /// (to put a TLS or SASL front before it).
    /// Broker ids start at 1.
    pub fn set_advertised(&self, id: i32, host: &str, port: u16) -> Result<(), String> {
        let host = CString::new(host).map_err(|e| e.to_string())?;
        unsafe {
            rd::rd_kafka_mock_broker_set_host_port(self.mc, id, host.as_ptr(), i32::from(port))
        };
        Ok(())
    }

    fn check(err: rd::rd_kafka_resp_err_t, what: &str) -> Result<(), String> {
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(format!("{what}: {err:?}"))
        }
    }
}
