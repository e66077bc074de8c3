// Progressive enhancement: Copy buttons (hidden without JavaScript, where
// the text can still be selected and copied by hand).
for (const button of document.querySelectorAll("button[data-copy]")) {
	const source = document.getElementById(button.dataset.copy);
	const status = document.querySelector(".copy-status");
	button.hidden = false;
	button.addEventListener("click", async () => {
		const text = source.value ?? source.textContent;
		try {
			await navigator.clipboard.writeText(text);
		} catch {
			if (source.select) source.select();
			document.execCommand("copy");
		}
		button.textContent = "Copied";
		if (status) status.textContent = "Copied to the clipboard.";
		setTimeout(() => { button.textContent = "Copy"; }, 2000);
	});
}
