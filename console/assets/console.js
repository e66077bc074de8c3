// Progressive enhancement: Copy buttons, hidden without JavaScript (the
// text can still be selected and copied by hand).
for (const button of document.querySelectorAll("button[data-copy]")) {
	const source = document.getElementById(button.dataset.copy);
	const status = document.querySelector(".copy-status");
	button.hidden = false;
	button.addEventListener("click", async () => {
		let copied = false;
		try {
			await navigator.clipboard.writeText(source.value ?? source.textContent);
			copied = true;
		} catch {
			if (source.select) source.select();
			copied = document.execCommand("copy");
		}
		button.textContent = copied ? "Copied" : "Press Ctrl+C";
		if (status) status.textContent = copied ? "Copied to the clipboard." : "Copy the selected text with Ctrl+C (⌘C on a Mac).";
		setTimeout(() => { button.textContent = "Copy"; }, 2000);
	});
}

// Scope pickers (the explorer's filter, the create form's scopes): as boxes
// are checked, show the routes those scopes open. The server renders the
// same state for the boxes checked when the page was made; presets are
// links that work without JavaScript and here only check boxes.
function opens(checked, need) {
	if (checked.size === 0) return true; // no scopes: full access
	if (need === "*") return false;
	if (checked.has(need)) return true;
	return need.endsWith(":read") && checked.has(need.slice(0, -":read".length) + ":write");
}

for (const picker of document.querySelectorAll("[data-scope-picker]")) {
	const boxes = [...picker.querySelectorAll('input[type=checkbox][name="scopes"]')];
	const target = document.getElementById(picker.dataset.routes);
	const count = picker.querySelector("[data-open-count]");
	const update = () => {
		const checked = new Set(boxes.filter(b => b.checked).map(b => b.value));
		let open = 0;
		for (const el of target.querySelectorAll("[data-route-scope]")) {
			el.hidden = !opens(checked, el.dataset.routeScope);
			if (!el.hidden) open++;
		}
		for (const group of target.querySelectorAll("[data-route-group]")) {
			const any = group.querySelector("[data-route-scope]:not([hidden])") !== null;
			group.querySelector("[data-none-open]").hidden = any;
			group.querySelector("table").hidden = !any;
		}
		const newKey = picker.querySelector("[data-new-key]");
		if (newKey) {
			const q = new URLSearchParams();
			for (const s of checked) q.append("scopes", s);
			newKey.href = `${newKey.dataset.newKey}${checked.size ? "?" + q : ""}#scopes`;
		}
		if (count) {
			const total = count.dataset.total;
			count.textContent = checked.size === 0
				? `All ${total} routes: a key without scopes can call every one`
				: `These scopes open ${open} of ${total} routes`;
		}
	};
	for (const b of boxes) b.addEventListener("change", update);
	for (const a of picker.querySelectorAll("a[data-preset]")) {
		a.addEventListener("click", ev => {
			ev.preventDefault();
			const want = new Set(a.dataset.preset.split(" "));
			for (const b of boxes) b.checked = want.has(b.value);
			update();
		});
	}
}

// Try it: the request goes from this page straight to the API (which must
// allow this origin: spk_auth's cors option). The key is read from the
// field when the request is sent and kept nowhere else.
const tryForm = document.querySelector("form[data-try]");
if (tryForm) {
	const route = tryForm.querySelector("#try-route");
	const params = tryForm.querySelector("[data-params]");
	const bodyField = tryForm.querySelector("[data-body]");
	const keyField = tryForm.querySelector("[data-try-key]");
	const key = tryForm.querySelector("#try-key");
	const send = tryForm.querySelector("[data-try-send]");
	const result = document.querySelector("[data-try-result]");
	const status = result.querySelector("[data-try-status]");
	const headers = result.querySelector("[data-try-headers]");
	const response = result.querySelector("[data-try-response]");
	keyField.hidden = false;
	send.textContent = "Send request";

	const picked = () => route.options[route.selectedIndex];
	const fieldError = (input, message) => {
		const id = input.id + "-error";
		let p = document.getElementById(id);
		if (!p) {
			p = document.createElement("p");
			p.id = id;
			p.className = "error-text";
			input.before(p);
			input.setAttribute("aria-describedby", `${input.getAttribute("aria-describedby") || ""} ${id}`.trim());
		}
		p.hidden = !message;
		p.textContent = message ? `Error: ${message}` : "";
		if (message) input.setAttribute("aria-invalid", "true");
		else input.removeAttribute("aria-invalid");
	};
	// The path parameters of the picked route, as the server names them.
	const renderParams = () => {
		const old = Object.fromEntries([...params.querySelectorAll("input")].map(i => [i.name, i.value]));
		params.replaceChildren();
		const segs = picked().dataset.path.slice(1).split("/");
		segs.forEach((s, i) => {
			if (s !== "*") return;
			const rest = i === segs.length - 1;
			const name = rest ? "rest" : `p${i}`;
			const field = document.createElement("div");
			field.className = "field";
			const label = document.createElement("label");
			label.htmlFor = `try-${name}`;
			label.textContent = rest ? "Rest of the path" : (i > 0 ? `${segs[i - 1]} id` : "Id");
			const hint = document.createElement("p");
			hint.className = "hint";
			hint.id = `try-${name}-hint`;
			hint.textContent = rest ? "e.g. 42 or 42/updates; may be empty" : "one path segment";
			const input = document.createElement("input");
			Object.assign(input, { type: "text", id: `try-${name}`, name, value: old[name] ?? "", autocomplete: "off", spellcheck: false });
			input.setAttribute("aria-describedby", hint.id);
			field.append(label, hint, input);
			params.append(field);
		});
		const m = picked().dataset.method;
		bodyField.hidden = !(m === "POST" || m === "PUT" || m === "PATCH");
	};
	route.addEventListener("change", renderParams);

	tryForm.addEventListener("submit", async ev => {
		ev.preventDefault();
		const opt = picked();
		const method = opt.dataset.method;
		const segs = opt.dataset.path.slice(1).split("/");
		let bad = null;
		const path = "/" + segs.map((s, i) => {
			if (s !== "*") return s;
			const input = params.querySelector(`[name="${i === segs.length - 1 ? "rest" : "p" + i}"]`);
			const v = input ? input.value.trim() : "";
			if (i === segs.length - 1) {
				fieldError(input, "");
				return v.split("/").map(encodeURIComponent).join("/");
			}
			fieldError(input, v ? "" : "Fill in this part of the path.");
			if (!v && !bad) bad = input;
			return encodeURIComponent(v);
		}).join("/");
		const k = key.value.trim();
		fieldError(key, k ? "" : "Paste an API key to send the request with.");
		if (!k && !bad) bad = key;
		if (bad) { bad.focus(); return; }
		const init = {
			method,
			headers: { Authorization: `Bearer ${k}`, Accept: "application/json" },
			mode: "cors", credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer", redirect: "error",
		};
		if (!bodyField.hidden) {
			init.headers["Content-Type"] = "application/json";
			init.body = tryForm.querySelector("#try-body").value || "{}";
		}
		result.hidden = false;
		status.textContent = `Sending ${method} ${path}…`;
		headers.replaceChildren();
		response.textContent = "";
		send.disabled = true;
		try {
			const res = await fetch(tryForm.dataset.origin + path, init);
			status.textContent = `${res.status} ${res.statusText}`.trim();
			status.dataset.status = res.status;
			for (const name of ["RateLimit", "RateLimit-Policy", "Retry-After", "WWW-Authenticate", "Content-Type"]) {
				const v = res.headers.get(name);
				if (v === null) continue;
				const dt = document.createElement("dt");
				dt.textContent = name;
				const dd = document.createElement("dd");
				const code = document.createElement("code");
				code.textContent = v;
				dd.append(code);
				headers.append(dt, dd);
			}
			let text = await res.text();
			try { text = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as it came */ }
			response.textContent = text.length > 100000 ? text.slice(0, 100000) + "\n…" : text;
		} catch (err) {
			status.dataset.status = "0";
			status.textContent = "No answer the page may read: the API is unreachable, or does not allow requests from this page's origin (spk_auth's cors option).";
		} finally {
			send.disabled = false;
		}
	});
}
