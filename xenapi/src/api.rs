//! Typed calls: generic accessors for every class, and the methods the replication, seeding and
//! backup flows use. Anything else: [`Client::call`].

use std::collections::BTreeMap;

use crate::client::Client;
use crate::error::Error;
use crate::records::{
    EventBatch, HasRecord, NbdInfo, NetworkPurpose, PoolRecord, VbdMode, VbdType, VdiType,
    VifLockingMode,
};
use crate::refs::{Class, Host, Network, Pool, Ref, Sr, Vbd, Vdi, Vif, Vm};
use crate::task::WaitOptions;
use crate::value::{FromValue, StringMap, Value};

/// Arguments of `VDI.create` (required fields first; the rest default like xapi's).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct VdiCreate {
    /// Target SR.
    pub sr: Ref<Sr>,
    /// Size in bytes (VHD SRs round up to 2 MiB: read `virtual_size` back).
    pub virtual_size: u64,
    /// Name.
    pub name_label: String,
    /// Description.
    pub name_description: String,
    /// Kind of disk (default `user`).
    pub vdi_type: VdiType,
    /// Attachable by several VMs.
    pub sharable: bool,
    /// Read-only.
    pub read_only: bool,
    /// Free-form map.
    pub other_config: StringMap,
    /// xenstore entries.
    pub xenstore_data: StringMap,
    /// SM data.
    pub sm_config: StringMap,
    /// Tags.
    pub tags: Vec<String>,
}

impl VdiCreate {
    /// A user disk of `virtual_size` bytes on `sr`.
    pub fn new(sr: Ref<Sr>, virtual_size: u64) -> VdiCreate {
        VdiCreate {
            sr,
            virtual_size,
            name_label: String::new(),
            name_description: String::new(),
            vdi_type: VdiType::User,
            sharable: false,
            read_only: false,
            other_config: StringMap::new(),
            xenstore_data: StringMap::new(),
            sm_config: StringMap::new(),
            tags: Vec::new(),
        }
    }

    /// The constructor struct.
    pub fn to_value(&self) -> Result<Value, Error> {
        let size = i64::try_from(self.virtual_size).map_err(|_| Error::Conversion {
            expected: "size below 2^63",
            found: "larger size",
            field: Some("virtual_size".into()),
        })?;
        Ok(Value::structure([
            ("name_label", Value::from(self.name_label.as_str())),
            (
                "name_description",
                Value::from(self.name_description.as_str()),
            ),
            ("SR", Value::from(&self.sr)),
            ("virtual_size", Value::Int(size)),
            ("type", Value::from(&self.vdi_type)),
            ("sharable", Value::Bool(self.sharable)),
            ("read_only", Value::Bool(self.read_only)),
            ("other_config", Value::from(self.other_config.clone())),
            ("xenstore_data", Value::from(self.xenstore_data.clone())),
            ("sm_config", Value::from(self.sm_config.clone())),
            ("tags", Value::from(self.tags.clone())),
        ]))
    }
}

/// Arguments of `VBD.create`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct VbdCreate {
    /// The VM.
    pub vm: Ref<Vm>,
    /// The disk (`Ref::null()` with `empty` for an empty CD drive).
    pub vdi: Ref<Vdi>,
    /// Slot (`"0"`, `"1"`, … or `"autodetect"`).
    pub userdevice: String,
    /// Bootable.
    pub bootable: bool,
    /// RO / RW.
    pub mode: VbdMode,
    /// Disk / CD / Floppy.
    pub vbd_type: VbdType,
    /// Hot-unpluggable.
    pub unpluggable: bool,
    /// Empty drive.
    pub empty: bool,
    /// Free-form map.
    pub other_config: StringMap,
    /// QoS algorithm (usually empty).
    pub qos_algorithm_type: String,
    /// QoS parameters.
    pub qos_algorithm_params: StringMap,
}

impl VbdCreate {
    /// A read-write, non-bootable disk VBD at `userdevice`.
    pub fn disk(vm: Ref<Vm>, vdi: Ref<Vdi>, userdevice: impl Into<String>) -> VbdCreate {
        VbdCreate {
            vm,
            vdi,
            userdevice: userdevice.into(),
            bootable: false,
            mode: VbdMode::Rw,
            vbd_type: VbdType::Disk,
            unpluggable: true,
            empty: false,
            other_config: StringMap::new(),
            qos_algorithm_type: String::new(),
            qos_algorithm_params: StringMap::new(),
        }
    }

    /// The constructor struct.
    pub fn to_value(&self) -> Value {
        Value::structure([
            ("VM", Value::from(&self.vm)),
            ("VDI", Value::from(&self.vdi)),
            ("userdevice", Value::from(self.userdevice.as_str())),
            ("bootable", Value::Bool(self.bootable)),
            ("mode", Value::from(&self.mode)),
            ("type", Value::from(&self.vbd_type)),
            ("unpluggable", Value::Bool(self.unpluggable)),
            ("empty", Value::Bool(self.empty)),
            ("other_config", Value::from(self.other_config.clone())),
            (
                "qos_algorithm_type",
                Value::from(self.qos_algorithm_type.as_str()),
            ),
            (
                "qos_algorithm_params",
                Value::from(self.qos_algorithm_params.clone()),
            ),
        ])
    }
}

/// Arguments of `VIF.create`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct VifCreate {
    /// Device number (`"0"`, …).
    pub device: String,
    /// The network.
    pub network: Ref<Network>,
    /// The VM.
    pub vm: Ref<Vm>,
    /// MAC (`""`: generated from the VM's `mac_seed`).
    pub mac: String,
    /// MTU.
    pub mtu: i64,
    /// Free-form map.
    pub other_config: StringMap,
    /// QoS algorithm.
    pub qos_algorithm_type: String,
    /// QoS parameters.
    pub qos_algorithm_params: StringMap,
    /// Locking mode.
    pub locking_mode: VifLockingMode,
}

impl VifCreate {
    /// VIF `device` of `vm` on `network`, MAC generated, MTU 1500.
    pub fn new(vm: Ref<Vm>, network: Ref<Network>, device: impl Into<String>) -> VifCreate {
        VifCreate {
            device: device.into(),
            network,
            vm,
            mac: String::new(),
            mtu: 1500,
            other_config: StringMap::new(),
            qos_algorithm_type: String::new(),
            qos_algorithm_params: StringMap::new(),
            locking_mode: VifLockingMode::NetworkDefault,
        }
    }

    /// The constructor struct.
    pub fn to_value(&self) -> Value {
        Value::structure([
            ("device", Value::from(self.device.as_str())),
            ("network", Value::from(&self.network)),
            ("VM", Value::from(&self.vm)),
            ("MAC", Value::from(self.mac.as_str())),
            ("MTU", Value::Int(self.mtu)),
            ("other_config", Value::from(self.other_config.clone())),
            (
                "qos_algorithm_type",
                Value::from(self.qos_algorithm_type.as_str()),
            ),
            (
                "qos_algorithm_params",
                Value::from(self.qos_algorithm_params.clone()),
            ),
            ("locking_mode", Value::from(&self.locking_mode)),
        ])
    }
}

fn method<C: Class>(name: &str) -> String {
    format!("{}.{name}", C::NAME)
}

impl Client {
    /// `<Class>.get_record`.
    pub async fn get_record<C: HasRecord>(&self, reference: &Ref<C>) -> Result<C::Record, Error> {
        self.call(&method::<C>("get_record"), vec![Value::from(reference)])
            .await
    }

    /// `<Class>.get_all_records` (templates, snapshots and dom0s included for VMs).
    pub async fn get_all_records<C: HasRecord>(
        &self,
    ) -> Result<BTreeMap<Ref<C>, C::Record>, Error> {
        self.call(&method::<C>("get_all_records"), vec![]).await
    }

    /// `<Class>.get_all`.
    pub async fn get_all<C: Class>(&self) -> Result<Vec<Ref<C>>, Error> {
        self.call(&method::<C>("get_all"), vec![]).await
    }

    /// `<Class>.get_by_uuid` (`UUID_INVALID` if none).
    pub async fn get_by_uuid<C: Class>(&self, uuid: &str) -> Result<Ref<C>, Error> {
        self.call(&method::<C>("get_by_uuid"), vec![Value::from(uuid)])
            .await
    }

    /// `<Class>.get_<field>`, for fields the typed records leave out.
    pub async fn get_field<C: Class, T: FromValue>(
        &self,
        reference: &Ref<C>,
        field: &str,
    ) -> Result<T, Error> {
        self.call(
            &method::<C>(&format!("get_{field}")),
            vec![Value::from(reference)],
        )
        .await
    }

    /// `<Class>.set_<field>`.
    pub async fn set_field<C: Class>(
        &self,
        reference: &Ref<C>,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<(), Error> {
        self.call(
            &method::<C>(&format!("set_{field}")),
            vec![Value::from(reference), value.into()],
        )
        .await
    }

    /// Sets `key` in the map field `field`: `remove_from_<field>` then `add_to_<field>`, as xapi
    /// expects (`add_to_` refuses an existing key with `MAP_DUPLICATE_KEY`; removing an absent
    /// key is a no-op).
    pub async fn map_put<C: Class>(
        &self,
        reference: &Ref<C>,
        field: &str,
        key: &str,
        value: &str,
    ) -> Result<(), Error> {
        self.map_remove(reference, field, key).await?;
        self.call(
            &method::<C>(&format!("add_to_{field}")),
            vec![Value::from(reference), Value::from(key), Value::from(value)],
        )
        .await
    }

    /// `remove_from_<field>(key)` (no error when absent).
    pub async fn map_remove<C: Class>(
        &self,
        reference: &Ref<C>,
        field: &str,
        key: &str,
    ) -> Result<(), Error> {
        self.call(
            &method::<C>(&format!("remove_from_{field}")),
            vec![Value::from(reference), Value::from(key)],
        )
        .await
    }

    /// `Async.<Class>.create(args)`, waited for.
    pub async fn create<C: Class>(
        &self,
        args: Value,
        options: &WaitOptions,
    ) -> Result<Ref<C>, Error> {
        self.run_async(&method::<C>("create"), vec![args], options)
            .await
    }

    /// `Async.<Class>.destroy`, waited for.
    pub async fn destroy<C: Class>(
        &self,
        reference: &Ref<C>,
        options: &WaitOptions,
    ) -> Result<(), Error> {
        self.run_async(
            &method::<C>("destroy"),
            vec![Value::from(reference)],
            options,
        )
        .await
    }

    /// The pool (there is exactly one) and its record.
    pub async fn pool(&self) -> Result<(Ref<Pool>, PoolRecord), Error> {
        let all = self.get_all_records::<Pool>().await?;
        all.into_iter()
            .next()
            .ok_or_else(|| Error::protocol("pool.get_all_records returned no pool"))
    }

    /// `Async.VM.snapshot(vm, name[, ignore_vdis])`. `ignore_vdis` is sent only when non-empty
    /// (hosts before xapi 21.4 refuse a third parameter).
    pub async fn vm_snapshot(
        &self,
        vm: &Ref<Vm>,
        name: &str,
        ignore_vdis: &[Ref<Vdi>],
        options: &WaitOptions,
    ) -> Result<Ref<Vm>, Error> {
        let mut params = vec![Value::from(vm), Value::from(name)];
        if !ignore_vdis.is_empty() {
            params.push(Value::Array(ignore_vdis.iter().map(Value::from).collect()));
        }
        self.run_async("VM.snapshot", params, options).await
    }

    /// `Async.VM.clone(vm, name)` (a clone of a snapshot is a template).
    pub async fn vm_clone(
        &self,
        vm: &Ref<Vm>,
        name: &str,
        options: &WaitOptions,
    ) -> Result<Ref<Vm>, Error> {
        self.run_async(
            "VM.clone",
            vec![Value::from(vm), Value::from(name)],
            options,
        )
        .await
    }

    /// `Async.VM.copy(vm, name, sr)` (`Ref::null()` keeps each disk's SR).
    pub async fn vm_copy(
        &self,
        vm: &Ref<Vm>,
        name: &str,
        sr: &Ref<Sr>,
        options: &WaitOptions,
    ) -> Result<Ref<Vm>, Error> {
        self.run_async(
            "VM.copy",
            vec![Value::from(vm), Value::from(name), Value::from(sr)],
            options,
        )
        .await
    }

    /// `Async.VDI.create`.
    pub async fn vdi_create(
        &self,
        args: &VdiCreate,
        options: &WaitOptions,
    ) -> Result<Ref<Vdi>, Error> {
        self.create::<Vdi>(args.to_value()?, options).await
    }

    /// `Async.VDI.snapshot(vdi, driver_params)`.
    pub async fn vdi_snapshot(
        &self,
        vdi: &Ref<Vdi>,
        driver_params: &StringMap,
        options: &WaitOptions,
    ) -> Result<Ref<Vdi>, Error> {
        self.run_async(
            "VDI.snapshot",
            vec![Value::from(vdi), Value::from(driver_params.clone())],
            options,
        )
        .await
    }

    /// `Async.VDI.clone(vdi, driver_params)`.
    pub async fn vdi_clone(
        &self,
        vdi: &Ref<Vdi>,
        driver_params: &StringMap,
        options: &WaitOptions,
    ) -> Result<Ref<Vdi>, Error> {
        self.run_async(
            "VDI.clone",
            vec![Value::from(vdi), Value::from(driver_params.clone())],
            options,
        )
        .await
    }

    /// `Async.VDI.copy(vdi, sr, base_vdi, into_vdi)` (null refs for the defaults).
    pub async fn vdi_copy(
        &self,
        vdi: &Ref<Vdi>,
        sr: &Ref<Sr>,
        base: &Ref<Vdi>,
        into: &Ref<Vdi>,
        options: &WaitOptions,
    ) -> Result<Ref<Vdi>, Error> {
        self.run_async(
            "VDI.copy",
            vec![
                Value::from(vdi),
                Value::from(sr),
                Value::from(base),
                Value::from(into),
            ],
            options,
        )
        .await
    }

    /// `Async.VDI.enable_cbt`.
    pub async fn vdi_enable_cbt(&self, vdi: &Ref<Vdi>, options: &WaitOptions) -> Result<(), Error> {
        self.run_async("VDI.enable_cbt", vec![Value::from(vdi)], options)
            .await
    }

    /// `Async.VDI.disable_cbt`.
    pub async fn vdi_disable_cbt(
        &self,
        vdi: &Ref<Vdi>,
        options: &WaitOptions,
    ) -> Result<(), Error> {
        self.run_async("VDI.disable_cbt", vec![Value::from(vdi)], options)
            .await
    }

    /// `Async.VDI.data_destroy` (CBT snapshots: keep the log, drop the data).
    pub async fn vdi_data_destroy(
        &self,
        vdi: &Ref<Vdi>,
        options: &WaitOptions,
    ) -> Result<(), Error> {
        self.run_async("VDI.data_destroy", vec![Value::from(vdi)], options)
            .await
    }

    /// `Async.VDI.list_changed_blocks(from, to)`: base64 bitmap of 64 KiB blocks.
    pub async fn vdi_list_changed_blocks(
        &self,
        from: &Ref<Vdi>,
        to: &Ref<Vdi>,
        options: &WaitOptions,
    ) -> Result<String, Error> {
        self.run_async(
            "VDI.list_changed_blocks",
            vec![Value::from(from), Value::from(to)],
            options,
        )
        .await
    }

    /// `VDI.get_nbd_info` (no async form). The export names embed this session.
    pub async fn vdi_get_nbd_info(&self, vdi: &Ref<Vdi>) -> Result<Vec<NbdInfo>, Error> {
        self.call("VDI.get_nbd_info", vec![Value::from(vdi)]).await
    }

    /// `Async.VBD.create`.
    pub async fn vbd_create(
        &self,
        args: &VbdCreate,
        options: &WaitOptions,
    ) -> Result<Ref<Vbd>, Error> {
        self.create::<Vbd>(args.to_value(), options).await
    }

    /// `Async.VBD.plug`.
    pub async fn vbd_plug(&self, vbd: &Ref<Vbd>, options: &WaitOptions) -> Result<(), Error> {
        self.run_async("VBD.plug", vec![Value::from(vbd)], options)
            .await
    }

    /// `Async.VBD.unplug`.
    pub async fn vbd_unplug(&self, vbd: &Ref<Vbd>, options: &WaitOptions) -> Result<(), Error> {
        self.run_async("VBD.unplug", vec![Value::from(vbd)], options)
            .await
    }

    /// `Async.VIF.create`.
    pub async fn vif_create(
        &self,
        args: &VifCreate,
        options: &WaitOptions,
    ) -> Result<Ref<Vif>, Error> {
        self.create::<Vif>(args.to_value(), options).await
    }

    /// `Async.SR.scan`.
    pub async fn sr_scan(&self, sr: &Ref<Sr>, options: &WaitOptions) -> Result<(), Error> {
        self.run_async("SR.scan", vec![Value::from(sr)], options)
            .await
    }

    /// `host.get_server_certificate`: the PEM of the host's TLS certificate.
    pub async fn host_get_server_certificate(&self, host: &Ref<Host>) -> Result<String, Error> {
        self.call("host.get_server_certificate", vec![Value::from(host)])
            .await
    }

    /// `network.add_purpose`.
    pub async fn network_add_purpose(
        &self,
        network: &Ref<Network>,
        purpose: &NetworkPurpose,
    ) -> Result<(), Error> {
        self.call(
            "network.add_purpose",
            vec![Value::from(network), Value::from(purpose)],
        )
        .await
    }

    /// `network.remove_purpose`.
    pub async fn network_remove_purpose(
        &self,
        network: &Ref<Network>,
        purpose: &NetworkPurpose,
    ) -> Result<(), Error> {
        self.call(
            "network.remove_purpose",
            vec![Value::from(network), Value::from(purpose)],
        )
        .await
    }

    /// `event.from(classes, token, timeout)`: blocks up to `timeout` seconds on the server.
    pub async fn event_from(
        &self,
        classes: &[&str],
        token: &str,
        timeout: f64,
    ) -> Result<EventBatch, Error> {
        let classes = Value::Array(classes.iter().map(|class| Value::from(*class)).collect());
        self.call(
            "event.from",
            vec![classes, Value::from(token), Value::Double(timeout)],
        )
        .await
    }

    /// `event.inject(class, ref)`: a token just before a `mod` event of that object.
    pub async fn event_inject<C: Class>(&self, reference: &Ref<C>) -> Result<String, Error> {
        self.call(
            "event.inject",
            vec![Value::from(C::NAME), Value::from(reference)],
        )
        .await
    }
}
